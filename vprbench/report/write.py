"""``write_report``: the tables in the asked formats and the figures of one report, under one folder."""

from __future__ import annotations

from pathlib import Path

from vprbench.errors import VPRBenchError
from vprbench.report.figures import efficiency, mosaic, pr_curves, recall_curves, training_curves
from vprbench.report.records import frame, load_profiles, load_records
from vprbench.report.robotics_tables import robotics_latex, robotics_markdown
from vprbench.report.tables import against_baseline, to_csv, to_latex, to_markdown


def write_report(
    results_dir: Path,
    out: Path,
    formats: list[str],
    runs: str | None = None,
    recipe: str | None = None,
    queries: list[int] | None = None,
    figures: bool = True,
    ci: bool = False,
    baseline: str | None = None,
    ks: list[int] | None = None,
    label: str | None = None,
    correction: str = "holm",
    left_out: list[dict] | None = None,
    metrics: bool = False,
) -> list[Path]:
    """Tables in ``formats`` (latex, markdown, csv) and the figures, under ``out``; returns the paths.
    With ``baseline`` (a variant or model name), recalls not significantly different from that row's
    on the same protocol are marked (``correction``: holm or none). ``ks``: the table's columns
    (default 1, 5, 10; the CSV keeps every k). ``label``: the LaTeX label (default tab:<recipe>).
    Records left out of a recipe's table (no longer in it, failed) go to ``left_out``. ``metrics``:
    also the robotics metrics' table (evaluate --metrics) beside each LaTeX and Markdown table."""
    records = load_records(results_dir, runs, recipe, left_out)
    df = frame(records, load_profiles(results_dir))
    if ks:
        missing = [k for k in ks if f"R@{k}" not in df]
        if missing:
            raise VPRBenchError(f"--k {missing}: no run record has R@{missing[0]}")
        df.attrs["ks"] = list(ks)
    if baseline is not None:
        df = against_baseline(df, baseline, correction)
    out.mkdir(parents=True, exist_ok=True)
    stem = recipe or "report"
    written = []
    label = label or "tab:" + "".join(c if c.isalnum() or c in "-_:" else "-" for c in stem)
    writers = {
        "latex": (lambda d: to_latex(d, label=label, ci=ci), "tex"),
        "markdown": (lambda d: to_markdown(d, ci=ci), "md"),
        "csv": (to_csv, "csv"),
    }
    from vprbench.atomic import write_text

    for fmt in formats:
        write, suffix = writers[fmt]
        path = out / f"{stem}.{suffix}"
        write_text(path, write(df))
        written.append(path)
        extra = {"latex": lambda d: robotics_latex(d, label=f"{label}-robotics"),
                 "markdown": robotics_markdown}.get(fmt)  # fmt: skip
        if metrics and extra is not None:
            path = out / f"{stem}-robotics.{suffix}"
            write_text(path, extra(df))
            written.append(path)
    if figures:
        written += recall_curves(df, out)
        written += efficiency(df, out)
        written += training_curves(records, out)
        written += pr_curves(records, out)  # runs evaluated with --metrics auc-pr or r@100p
        if queries:
            first: dict[str, dict] = {}  # the first variant of the recipe, per protocol
            for r in sorted(
                records, key=lambda r: (r.get("ablation") or {}).get("variant_index", 0)
            ):
                first.setdefault(r["protocol"]["name"], r)
            for record in first.values():
                written += mosaic(record, queries, out)
    return written
