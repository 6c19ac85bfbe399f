"""`vprbench compare RUN_A RUN_B`: paired difference of R@k, its interval, McNemar's exact test."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("compare")
@click.argument("run_a")
@click.argument("run_b")
@click.option("--k", "ks", default="1,5,10", show_default=True)
@click.option("--results-dir", type=click.Path(file_okay=False, path_type=Path), default=None)
@click.option(
    "--json", "as_json", is_flag=True, help="Print the comparison as JSON on stdout only."
)
def compare_cmd(run_a, run_b, ks, results_dir, as_json) -> None:
    """Is A better than B on the same queries? Difference, 95% interval, exact McNemar p-value."""
    import json
    from dataclasses import asdict

    from rich.table import Table

    from vprbench.compare import compare_runs, load_run
    from vprbench.errors import VPRBenchError
    from vprbench.evaluate import parse_ks
    from vprbench.paths import results_root
    from vprbench.ui import console, print_table, whole

    try:
        k_values = parse_ks(ks)
    except ValueError as exc:
        raise VPRBenchError(str(exc)) from exc
    results = results_root(results_dir)
    a, b = load_run(run_a, results), load_run(run_b, results)
    rows = compare_runs(a, b, k_values)
    if as_json:
        click.echo(json.dumps({"a": a["run_id"], "b": b["run_id"], "protocol": a["protocol"]["name"],
                               "comparisons": [asdict(r) | {"significant": r.significant} for r in rows]},
                              indent=2))  # fmt: skip
        return
    name = lambda r: (r.get("ablation") or {}).get("variant") or r["model"]["name"]  # noqa: E731
    table = Table(title=f"{name(a)} (A) vs {name(b)} (B) on {a['protocol']['name']}")
    for column in (
        "k",
        "A",
        "B",
        "A - B",
        "95% interval",
        "only A",
        "only B",
        "McNemar p",
        "verdict",
    ):
        table.add_column(column, justify="right")
    for r in rows:
        table.add_row(f"R@{r.k}", f"{100 * r.recall_a:.2f}", f"{100 * r.recall_b:.2f}",
                      f"{100 * r.difference:+.2f}", f"[{100 * r.low:+.2f}, {100 * r.high:+.2f}]",
                      str(r.only_a), str(r.only_b), f"{r.p_value:.3g}",
                      "significant" if r.significant else "not significant")  # fmt: skip
    print_table(whole(table))
    console.print("Paired bootstrap over the same queries (1,000 resamples, seed 0); McNemar's exact "
                  "test on the queries where exactly one run is right.", soft_wrap=True)  # fmt: skip
