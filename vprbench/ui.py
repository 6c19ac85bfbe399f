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


def whole(table: Table, wrap: tuple[str, ...] = ()) -> Table:
    """Never truncate: every column is at least as wide as its header and (except the prose columns
    named in ``wrap``, which fold at word boundaries) as its longest cell. Print with
    :func:`print_table`, so that output to a pipe or a log file shows every header and value whole."""
    for column in table.columns:
        header = str(column.header)
        if header in wrap:
            column.min_width = max(len(header), 12)
            column.overflow = "fold"
            continue
        cells = [str(c) for c in column._cells]  # rich keeps a column's cells in order
        column.min_width = max([len(header), *map(len, cells)])
        column.no_wrap = True
        column.overflow = "fold"
    return table


def print_table(table: Table, to: Console | None = None) -> None:
    """Print ``table`` at least as wide as its columns need, whatever the console width (80 when
    output is not a terminal): a wider line rather than a truncated value."""
    from rich.measure import Measurement

    to = to or console
    # Measured without the console's width, which Measurement.get clamps its result to; and
    # rendered on a console widened for the one call, since print(width=...) clamps to it too.
    needed = Measurement.get(to, to.options.update(max_width=10_000), table).minimum
    width = to.width
    to.width = max(width, needed)
    try:
        to.print(table, crop=False)
    finally:
        to.width = width


def recall_table(records: list[dict], title: str = "Recall@k", show_dataset: bool = True) -> Table:
    """One row per run record: model, dataset (unless all rows share it), R@k (percent) with its 95%
    interval over queries (the protocol's cluster rule) when the record has one, counts."""
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
        name = r["model"]["name"] + (
            " [RANDOM INIT]" if r["model"]["weights"]["random_init"] else ""
        )
        table.add_row(
            name,
            *([r["protocol"]["name"]] if show_dataset else []),
            *[_recall_cell(r["results"], str(k)) for k in ks],
            str(r["results"]["num_evaluated"]),
            str(r["results"]["num_queries_without_positives"]),
        )
    return whole(table)


def _recall_cell(results: dict, k: str) -> str:
    """``85.20 [83.10, 87.30]``: R@k in percent and its 95% interval (records before 0.4 have none)."""
    if k not in results["recall"]:
        return ""
    cell = f"{100 * results['recall'][k]:.2f}"
    interval = (results.get("ci95") or {}).get(k)
    return cell + (f" [{100 * interval[0]:.2f}, {100 * interval[1]:.2f}]" if interval else "")


def profile_table(records: list[dict], settings) -> Table:
    """One row per profile: parameters, GMACs/GFLOPs per image, latency, throughput, memory."""
    table = Table(
        title=f"Cost per image ({records[0]['settings']['device']}, {records[0]['settings']['dtype']})"
    )
    table.add_column("model", no_wrap=True)
    for col in ("input", "params", "trainable", "unused", "GMACs", "GFLOPs", "ms/img", "img/s",
                "peak MiB"):  # fmt: skip
        table.add_column(col, justify="right")
    for r in records:
        lat = r["latency"]
        table.add_row(
            r["model"],
            "x".join(map(str, r["image_size"])),
            f"{r['params']['total'] / 1e6:.2f} M",
            f"{r['params']['trainable'] / 1e6:.2f} M",
            f"{r['params']['unused']:,}",
            f"{r['flops']['gmacs_per_image']:.2f}",
            f"{r['flops']['gflops_per_image']:.2f}",
            f"{lat['image_ms_median']:.1f} [{lat['batch_ms_p25'] / r['settings']['batch_size']:.1f}-"
            f"{lat['batch_ms_p75'] / r['settings']['batch_size']:.1f}]",
            f"{lat['images_per_second']:.1f}",
            f"{r['memory']['peak_mib']:.0f}",
        )
    return whole(table)


def breakdown_table(records: list[dict]) -> Table:
    """Parameters (M) and GMACs per module group (backbone, adapters, DRM, aggregator, encoder, PCA)."""
    groups = list(dict.fromkeys(g for r in records for g in r["params"]["by_group"]))
    groups += [g for r in records for g in r["flops"]["macs_by_group"] if g not in groups]
    table = Table(title="Per module: params (M) / GMACs per image")
    table.add_column("model", no_wrap=True)
    for g in groups:
        table.add_column(g, justify="right")
    for r in records:
        cells = []
        for g in groups:
            p = r["params"]["by_group"].get(g)
            f = r["flops"]["macs_by_group"].get(g)
            cells.append(
                "-" if p is None and f is None else f"{(p or 0) / 1e6:.2f} / {(f or 0) / 1e9:.2f}"
            )
        table.add_row(r["model"], *cells)
    return whole(table)


def audit_table(record: dict) -> Table:
    """One row per audited setting: the baseline and audited values, then for each k the audited
    R@k, its change from the baseline with the 95% interval (* when significant) and the paired p."""
    ks = record["ks"]
    base = record["baseline"]
    # audits recorded before the correction existed carry no p_holm
    holm = (record.get("statistics") or {}).get("multiple_comparisons", "").startswith("Holm")
    summary = ", ".join(f"R@{k} {_recall_cell(base, str(k))}" for k in ks)
    table = Table(
        title=f"Audit of {record['model']['name']} on {record['protocol']['name']} "
        f"(baseline {summary})"
    )
    for column in ("setting", "baseline", "audited"):
        table.add_column(column, no_wrap=True)
    for k in ks:
        table.add_column(f"R@{k}", justify="right")
        table.add_column(f"ΔR@{k} [95%]", justify="right")
        table.add_column(f"p{' Holm' if holm else ''} (R@{k})", justify="right")
    for row in record["rows"]:
        cells = [row["setting"], row["baseline"], row["audited"]]
        for c in row["comparisons"]:
            delta = f"{100 * c['difference']:+.2f}"
            if c["low"] is None:  # no test: the same hits over another denominator
                cells += [f"{100 * c['recall']:.2f}", f"{delta} (exact)", "n/a"]
                continue
            mark = " *" if c["significant"] else ""
            cells += [
                f"{100 * c['recall']:.2f}",
                f"{delta} [{100 * c['low']:+.2f}, {100 * c['high']:+.2f}]{mark}",
                f"{c['p_holm'] if holm else c['p_value']:.3g}",
            ]
        table.add_row(*cells)
    return whole(table)
