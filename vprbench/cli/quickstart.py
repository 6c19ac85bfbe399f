"""`vprbench quickstart`: the main job on the embedded Nordland sample."""

from __future__ import annotations

import click

from vprbench.choices import (
    SAMPLE_NAME,
)
from vprbench.cli.common import cache_option, describe_intervals, results_option, root_option
from vprbench.paths import cache_root, data_root, results_root
from vprbench.ui import (
    console,
    print_table,
    progress_bars,
    recall_table,
)


@click.command("quickstart")
@root_option
@cache_option
@results_option
def quickstart_cmd(root, cache_dir, results_dir) -> None:
    """The main job on the embedded Nordland sample: import, extract, evaluate, print."""
    from vprbench.quickstart import run_quickstart

    with progress_bars() as bars:
        records, paths = run_quickstart(
            data_root(root), cache_root(cache_dir), results_root(results_dir), bars
        )
    print_table(
        recall_table(
            records, title="nordland-sample: 600 summer db / 600 winter queries", show_dataset=False
        )
    )
    describe_intervals(records[0])
    console.print(f"dataset:     {data_root(root) / SAMPLE_NAME}")
    console.print(f"descriptors: {cache_root(cache_dir) / 'descriptors' / SAMPLE_NAME}")
    for p in paths:
        console.print(f"run record:  {p}", soft_wrap=True)
