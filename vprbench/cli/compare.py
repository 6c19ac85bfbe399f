"""`vprbench compare RUN_A RUN_B`: paired difference of R@k, its interval, the paired test."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("compare")
@click.argument("run_a")
@click.argument("run_b")
@click.option("--k", "ks", default="1,5,10", show_default=True)
@click.option("--results-dir", type=click.Path(file_okay=False, path_type=Path), default=None)
@click.option("--correction", type=click.Choice(["holm", "none"]), default="holm", show_default=True,
              help="Holm-Bonferroni over the k compared, or uncorrected p-values.")  # fmt: skip
@click.option(
    "--json", "as_json", is_flag=True, help="Print the comparison as JSON on stdout only."
)
def compare_cmd(run_a, run_b, ks, results_dir, correction, as_json) -> None:
    """Is A better than B on the same queries? Difference, 95% interval and the paired test's p,
    resampling the queries by the runs' cluster rule (as recorded at evaluation)."""
    import json
    from dataclasses import asdict

    from rich.table import Table

    from vprbench.errors import VPRBenchError
    from vprbench.evaluate.compare import compare_with_resampling, load_run, run_labels
    from vprbench.evaluate.metrics import holm, parse_ks
    from vprbench.paths import results_root
    from vprbench.ui import console, print_table, whole

    try:
        k_values = parse_ks(ks)
    except ValueError as exc:
        raise VPRBenchError(str(exc)) from exc
    results = results_root(results_dir)
    a, b = load_run(run_a, results), load_run(run_b, results)
    rows, resampling = compare_with_resampling(a, b, k_values)
    adjusted = (
        holm([r.p_value for r in rows]) if correction == "holm" else [r.p_value for r in rows]
    )
    methods = resampling.method()
    statistics = {
        "resampling": resampling.describe(),
        **methods,
        "multiple_comparisons": f"Holm-Bonferroni over the {len(rows)} k compared"
        if correction == "holm"
        else "none (uncorrected)",
        "significant": "Holm-adjusted p < 0.05" if correction == "holm" else "p < 0.05",
    }
    if as_json:
        comparisons = [asdict(r) | {"p_holm": p if correction == "holm" else None,
                                    "significant": p < 0.05}
                       for r, p in zip(rows, adjusted, strict=True)]  # fmt: skip
        labels = dict(zip("ab", run_labels(a, b), strict=True))
        click.echo(json.dumps({"a": a["run_id"], "b": b["run_id"], "labels": labels,
                               "protocol": a["protocol"]["name"],
                               "statistics": statistics, "comparisons": comparisons},
                              indent=2))  # fmt: skip
        return
    label_a, label_b = run_labels(a, b)
    table = Table(title=f"{label_a} (A) vs {label_b} (B) on {a['protocol']['name']}")
    for column in (
        "k",
        "A",
        "B",
        "A - B",
        "95% interval",
        "only A",
        "only B",
        "p",
        *(["p Holm"] if correction == "holm" else []),
        "verdict",
    ):
        table.add_column(column, justify="right")
    for r, p in zip(rows, adjusted, strict=True):
        table.add_row(f"R@{r.k}", f"{100 * r.recall_a:.2f}", f"{100 * r.recall_b:.2f}",
                      f"{100 * r.difference:+.2f}", f"[{100 * r.low:+.2f}, {100 * r.high:+.2f}]",
                      str(r.only_a), str(r.only_b), f"{r.p_value:.3g}",
                      *([f"{p:.3g}"] if correction == "holm" else []),
                      "significant" if p < 0.05 else "not significant")  # fmt: skip
    print_table(whole(table))
    console.print(f"Queries resampled as {statistics['resampling']}: "
                  f"interval: {methods['paired_interval']}; "
                  f"test: {methods['test']}. Multiple comparisons: {statistics['multiple_comparisons']}; "
                  f"significant: {statistics['significant']}. Only query sampling is tested: "
                  "two training seeds of one variant can differ by more.", soft_wrap=True)  # fmt: skip
