"""`vprbench ablate RECIPE`: parse, expand, run (or print the plan), summarise."""

from __future__ import annotations

import sys
from pathlib import Path

import click


@click.command("ablate")
@click.argument("recipe", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--dry-run", is_flag=True, help="Print the plan and what is cached; run nothing.")
@click.option("--only", multiple=True, help="Run only this variant (repeatable).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a setting of every variant (dotted: options.drm=false).")  # fmt: skip
@click.option("--results-dir", type=click.Path(file_okay=False, path_type=Path), default=None)
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), default=None)
def ablate_cmd(recipe, dry_run, only, overrides, results_dir, cache_dir) -> None:
    """Run an ablation recipe: train, extract, evaluate, profile each variant (every stage cached)."""
    from rich.table import Table

    from vprbench.ablate.recipe import load_recipe
    from vprbench.ablate.run import plan_lines, run_recipe, select
    from vprbench.ablate.variants import expand
    from vprbench.paths import results_root
    from vprbench.ui import console, print_table, progress_bars, whole
    from vprbench.yamlfile import parse_overrides

    parsed = load_recipe(recipe)
    sets = parse_overrides(overrides)
    results = results_root(results_dir)
    if dry_run:
        variants = select(expand(parsed, sets), list(only))
        console.print(f"recipe {parsed.name} ({recipe}): {len(variants)} run(s)", soft_wrap=True)
        for line in plan_lines(parsed, variants, results):
            console.print(line, soft_wrap=True, highlight=False)
        return
    with progress_bars() as bars:
        outcomes = run_recipe(parsed, results, cache_dir, list(only), sets,
                              say=lambda m: console.print(m, soft_wrap=True, highlight=False),
                              progress=bars)  # fmt: skip
    table = Table(title=f"ablation {parsed.name}")
    for column in ("variant", "seed", "status", "records"):
        table.add_column(column, no_wrap=column != "status")
    for o in outcomes:
        table.add_row(o.variant.name, str(o.variant.seed), "ok" if o.error is None else f"FAILED: {o.error}",
                      str(len(o.records)))  # fmt: skip
    print_table(whole(table, wrap=("status",)))
    failed = sum(o.error is not None for o in outcomes)
    console.print(f"{len(outcomes) - failed} of {len(outcomes)} runs succeeded; "
                  f"`vprbench report --recipe {parsed.name}` builds the tables")  # fmt: skip
    if failed:
        sys.exit(1)
