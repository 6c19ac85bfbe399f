"""Rendering helpers for the command line: progress bars and tables (rich)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

console = Console()
err_console = Console(stderr=True)


@contextlib.contextmanager
def progress_bars() -> Iterator[Callable[[str, int], Callable[[int], None]]]:
    """Yields ``factory(label, total) -> advance(n)``; bars render on stderr."""
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=False,
    ) as progress:

        def factory(label: str, total: int) -> Callable[[int], None]:
            task = progress.add_task(label, total=total)
            return lambda n: progress.advance(task, n)

        yield factory


def recall_table(records: list[dict], title: str = "Recall@k", show_dataset: bool = True) -> Table:
    """One row per run record: model, dataset (unless all rows share it), R@k (percent), counts."""
    ks = sorted({int(k) for r in records for k in r["results"]["recall"]})
    table = Table(title=title)
    table.add_column("model", no_wrap=True)
    if show_dataset:
        table.add_column("dataset", no_wrap=True)
    for k in ks:
        table.add_column(f"R@{k}", justify="right")
    table.add_column("queries", justify="right")
    table.add_column("no pos.", justify="right")
    for r in records:
        recall = r["results"]["recall"]
        name = r["model"]["name"] + (
            " [RANDOM INIT]" if r["model"]["weights"]["random_init"] else ""
        )
        table.add_row(
            name,
            *([r["protocol"]["name"]] if show_dataset else []),
            *[f"{100 * recall[str(k)]:.2f}" if str(k) in recall else "" for k in ks],
            str(r["results"]["num_evaluated"]),
            str(r["results"]["num_queries_without_positives"]),
        )
    return table
