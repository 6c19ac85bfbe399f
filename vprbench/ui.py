"""Rendering helpers for the command line: progress (a rich bar on a terminal, steady plain lines in
logs and pipes) and tables (rich)."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

console = Console()
err_console = Console(stderr=True)

# Seconds between two progress lines of one task when stderr is not a terminal
PROGRESS_INTERVAL_S = 30.0


def progress_interval() -> float:
    """``VPRBENCH_PROGRESS_INTERVAL`` (seconds), else :data:`PROGRESS_INTERVAL_S`."""
    value = os.environ.get("VPRBENCH_PROGRESS_INTERVAL")
    try:
        return max(0.0, float(value)) if value else PROGRESS_INTERVAL_S
    except ValueError:
        return PROGRESS_INTERVAL_S


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


@dataclass
class _Line:
    description: str
    total: int | None
    unit: str
    status: str
    started: float
    completed: int = 0
    base: int = 0  # what was already done when the rate's clock started
    last_line: float | None = None
    finished: bool = False


class LineProgress:
    """Progress for logs and pipes: rich's bar redraws one line, which a log file or a pipe shows as
    nothing or as noise. Per task, one plain line when it starts, then at most one every
    ``interval`` seconds, and one when it completes: what, done/total (percent), rate and ETA, and
    the task's status text. Offers the parts of rich's ``Progress`` that vprbench uses."""

    def __init__(self, console: Console, interval: float | None = None, clock=time.monotonic):
        self.console = console
        self.interval = progress_interval() if interval is None else interval
        self._clock = clock
        self._tasks: dict[int, _Line] = {}

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc) -> None:
        return None

    def add_task(self, description: str, total: int | None = None, unit: str = "it",
                 status: str = "", **_) -> int:  # fmt: skip
        task = len(self._tasks)
        self._tasks[task] = _Line(description, total, unit, status, self._clock())
        return task

    def advance(self, task: int, n: int = 1) -> None:
        self.update(task, advance=n)

    def update(self, task: int, *, description: str | None = None, completed: int | None = None,
               advance: int | None = None, total: int | None = None, status: str | None = None,
               **_) -> None:  # fmt: skip
        line = self._tasks[task]
        if description is not None:
            line.description = description
        if total is not None:
            line.total = total
        if status is not None:
            line.status = status
        if completed is not None:
            if completed < line.completed:  # counting again (the next epoch): a new rate and ETA
                line.started, line.finished, line.base = self._clock(), False, completed
            line.completed = completed
        if advance:
            line.completed += advance
        now = self._clock()
        done = line.total is not None and line.completed >= line.total
        due = line.last_line is None or now - line.last_line >= self.interval
        if (done and not line.finished) or (due and not done):
            line.finished = done
            line.last_line = now
            self.console.print(self.describe(line, now), soft_wrap=True, highlight=False)

    @staticmethod
    def describe(line: _Line, now: float) -> str:
        elapsed = now - line.started
        parts = [line.description + ":"]
        if line.total:
            parts.append(
                f"{line.completed:,}/{line.total:,} ({100 * line.completed / line.total:.0f}%)"
            )
        else:
            parts.append(f"{line.completed:,}")
        if elapsed > 0 and line.completed > line.base:
            rate = (line.completed - line.base) / elapsed
            parts.append(f"{rate:.1f} {line.unit}/s")
            if line.total and line.completed < line.total:
                parts.append(f"ETA {_duration((line.total - line.completed) / rate)}")
            else:
                parts.append(f"in {_duration(elapsed)}")
        if line.status:
            parts.append(line.status)
        return " ".join(parts)


def live_progress(*columns, to: Console | None = None):
    """A rich ``Progress`` with ``columns`` when ``to`` (stderr by default) is a terminal, else a
    :class:`LineProgress`; ``VPRBENCH_PROGRESS=lines|bar`` overrides the choice."""
    to = to or err_console
    mode = os.environ.get("VPRBENCH_PROGRESS")
    if mode == "lines" or (mode != "bar" and not to.is_terminal):
        return LineProgress(to)
    return Progress(*columns, console=to, transient=False)


@contextlib.contextmanager
def progress_bars(unit: str = "images") -> Iterator[Callable[[str, int], Callable[[int], None]]]:
    """Yields ``factory(label, total, unit=unit) -> advance(n)``; progress renders on stderr (see
    :func:`live_progress`)."""
    with live_progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()
    ) as progress:

        def factory(label: str, total: int, unit: str = unit) -> Callable[[int], None]:
            task = progress.add_task(label, total=total, unit=unit)
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
        rerank = (r.get("settings") or {}).get("rerank")
        if rerank:  # a two-stage number: never shown as the global stage's
            name += f" [re-ranked: {rerank['name']}, top {rerank['k']}]"
        table.add_row(
            escape(name),  # brackets are text, not rich markup
            *([r["protocol"]["name"]] if show_dataset else []),
            *[_recall_cell(r["results"], str(k)) for k in ks],
            str(r["results"]["num_evaluated"]),
            str(r["results"]["num_queries_without_positives"]),
        )
    return whole(table)


ROBOTICS_COLUMNS = (  # (record path under results.metrics, column), in the order shown
    (("vpr-bench", "auc_pr"), "AUC-PR VPR-Bench"),
    (("vpr-tutorial-single", "auc_pr"), "AUC-PR Tutorial single"),
    (("vpr-tutorial-multi", "auc_pr"), "AUC-PR Tutorial multi"),
    (("vpr-bench", "r_at_100p"), "R@100P VPR-Bench"),
    (("vpr-tutorial-single", "r_at_100p"), "R@100P Tutorial single"),
    (("vpr-tutorial-multi", "r_at_100p"), "R@100P Tutorial multi"),
)


def robotics_table(records: list[dict]) -> Table:
    """The robotics metrics of run records (evaluate --metrics): AUC-PR and R@100P in each
    convention (values 0-1), precision@k and MSLS mAP@k (percent), where computed."""
    table = Table(title="Robotics metrics (cosine similarity)")
    table.add_column("model", no_wrap=True)
    table.add_column("dataset", no_wrap=True)
    present = [c for c in ROBOTICS_COLUMNS
               if any(c[0][0] in r["results"].get("metrics", {}) for r in records)]  # fmt: skip
    ks = {name: sorted({int(k) for r in records for k in r["results"].get("metrics", {}).get(name, {})})
          for name in ("precision@k", "map@k")}  # fmt: skip
    for _, label in present:
        table.add_column(label, justify="right")
    for name, values in ks.items():
        for k in values:
            table.add_column(name.replace("@k", f"@{k}").replace("map", "mAP").replace("precision", "P"),
                             justify="right")  # fmt: skip
    for r in records:
        m = r["results"].get("metrics", {})
        cells = [f"{m[a][b]:.3f}" if a in m else "-" for (a, b), _ in present]
        for name, values in ks.items():
            cells += [f"{100 * m[name][str(k)]:.2f}" if name in m else "-" for k in values]
        table.add_row(r["model"]["name"], r["protocol"]["name"], *cells)
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


def reproduce_table(outcomes: list[dict]) -> Table:
    """One row per entry and k: published, measured with its 95% interval, the difference and the
    verdict (``vprbench reproduce``)."""
    table = Table(title="Published vs measured (recall@k, %)")
    for column in ("entry", "protocol", "k", "published", "measured [95%]", "diff", "verdict"):
        table.add_column(column, justify="right" if column in ("k", "published", "diff") else "left",
                         overflow="fold")  # fmt: skip
    from vprbench.reproduce.verdict import row_text

    for outcome in outcomes:
        entry = outcome["entry"]
        for row in outcome["rows"]:
            texts = row_text(row["published"], row["measured"], *row["interval"])
            table.add_row(entry["id"], entry["protocol"], str(row["k"]), *texts, row["verdict"])
    return table
