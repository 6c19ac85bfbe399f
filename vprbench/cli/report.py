"""`vprbench report`: run records -> tables (LaTeX, Markdown, CSV) and figures."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("report")
@click.option("--latex", "formats", flag_value="latex", multiple=True, help="A LaTeX table.")
@click.option(
    "--markdown", "formats", flag_value="markdown", multiple=True, help="A Markdown table."
)
@click.option("--csv", "formats", flag_value="csv", multiple=True, help="Every record as CSV.")
@click.option("--runs", default=None, help="Glob of run records (default: results/runs/*.json).")
@click.option("--recipe", default=None, help="Only the runs of this recipe.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for tables and figures (default: results/reports/<recipe or all>).")  # fmt: skip
@click.option("--queries", default=None, help="Prediction mosaics of these query indices: 0,5,9.")
@click.option("--no-figures", is_flag=True)
@click.option("--ci", is_flag=True,
              help="Show each recall's 95% interval (the method the protocol's cluster rule gives).")  # fmt: skip
@click.option("--baseline", default=None,
              help="Mark recalls not significantly different from this variant's.")  # fmt: skip
@click.option("--correction", type=click.Choice(["holm", "none"]), default="holm", show_default=True,
              help="Holm-Bonferroni over every cell tested against --baseline, or uncorrected.")  # fmt: skip
@click.option("--k", "ks", default="1,5,10", show_default=True,
              help="The table's R@k columns (the CSV keeps every recorded k).")  # fmt: skip
@click.option("--label", default=None, help="LaTeX \\label of the table (default: tab:<recipe>).")
@click.option(
    "--metrics",
    "metrics",
    is_flag=True,
    help="Also a table of AUC-PR and R@100P (runs evaluated with --metrics).",
)
@click.option("--reproduce", is_flag=True,
              help="A table of published against measured recall from `vprbench reproduce`.")  # fmt: skip
@click.option("--results-dir", type=click.Path(file_okay=False, path_type=Path), default=None)
def report_cmd(formats, runs, recipe, out, queries, no_figures, ci, baseline, correction, ks,
               label, metrics, reproduce, results_dir) -> None:  # fmt: skip
    """Tables and figures from the run records (and profiles) under the results folder."""
    from vprbench.errors import VPRBenchError
    from vprbench.evaluate.metrics import parse_ks
    from vprbench.paths import results_root
    from vprbench.report.write import write_report
    from vprbench.ui import console

    results = results_root(results_dir)
    out = out or results / "reports" / (recipe or "all")
    if reproduce:
        from vprbench.report.reproduce_tables import write_reproduce

        paths = write_reproduce(results, out, list(dict.fromkeys(formats)) or ["latex", "markdown",
                                                                               "csv"])  # fmt: skip
        for path in paths:
            if path.suffix == ".md":
                console.print(path.read_text(), soft_wrap=True, highlight=False)
        console.print(f"{len(paths)} files in {out}", soft_wrap=True)
        return
    try:
        picked = [int(q) for q in queries.split(",")] if queries else None
    except ValueError:
        raise VPRBenchError(
            f"--queries expects integers separated by commas, got {queries!r}"
        ) from None
    try:
        k_values = parse_ks(ks)
    except ValueError as exc:
        raise VPRBenchError(str(exc)) from exc
    left_out: list[dict] = []
    paths = write_report(results, out, list(dict.fromkeys(formats)) or ["latex", "markdown", "csv"],
                         runs, recipe, picked, figures=not no_figures, ci=ci, baseline=baseline,
                         ks=k_values, label=label, correction=correction,
                         left_out=left_out, metrics=metrics)  # fmt: skip
    for item in left_out:
        console.print(f"left out: {item['variant']} (seed {item['seed']}) on {item['protocol']}: "
                      f"{item['reason']}", soft_wrap=True)  # fmt: skip
    for path in paths:
        if path.suffix == ".md":
            console.print(path.read_text(), soft_wrap=True, highlight=False)
    console.print(f"{len(paths)} files in {out}", soft_wrap=True)
