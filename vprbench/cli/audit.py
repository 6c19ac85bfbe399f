"""`vprbench audit --model M --dataset P`: how much recall moves with each setting papers differ in."""

from __future__ import annotations

import click

from vprbench.cli.common import cache_option, json_mode, results_option, root_option


@click.command("audit")
@click.option("--model", "model_name", required=True, help="A registered model.")
@click.option("--dataset", required=True, help="A protocol or imported dataset name.")
@click.option("--weights", default=None, help="Weights: a file, a URL, or 'official'.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Model option.")
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda[:N].")
@click.option(
    "--workers",
    type=int,
    default=None,
    help="Image loader threads or processes (default: from the machine).",
)
@click.option("--k", "ks", default="1,5", show_default=True)
@click.option("--only", default=None, metavar="SETTING,...",
              help="Audit only these: batch-size, batch-order, image-size, interpolation, "
              "normalisation, dtype, pca, search, policy.")  # fmt: skip
@click.option("--image-size", "image_size", nargs=2, type=int, default=None, metavar="H W",
              help="The other image size to try (default: 1.5x the model's).")  # fmt: skip
@click.option("--pca-dim", type=int, default=4096, show_default=True)
@click.option("--pca-fit", default=None,
              help="Dataset the PCA is fitted on (default: the audited one; officially Pitts30k).")  # fmt: skip
@click.option("--correction", type=click.Choice(["holm", "none"]), default="holm", show_default=True,
              help="Correct the p-values for testing every row at every k (Holm-Bonferroni).")  # fmt: skip
@root_option
@cache_option
@results_option
@click.option("--json", "as_json", is_flag=True, help="Print the audit record as JSON on stdout only.")  # fmt: skip
def audit_cmd(model_name, dataset, weights, overrides, device, workers, ks, only, image_size,
              pca_dim, pca_fit, correction, root, cache_dir, results_dir, as_json) -> None:  # fmt: skip
    """Recall under the protocol's settings, then with one setting changed at a time: batch size and
    batch composition (batch-dependent models), image size, interpolation, normalisation, bf16, PCA,
    approximate search, the no-positive policy. Each change with its 95% interval and
    paired test, resampling the queries by the protocol's cluster rule."""
    from vprbench.errors import VPRBenchError
    from vprbench.evaluate.audit import run_audit
    from vprbench.evaluate.metrics import parse_ks
    from vprbench.extract.settings import ExtractSettings
    from vprbench.paths import cache_root, data_root, results_root
    from vprbench.ui import audit_table, console, err_console, print_table, progress_bars
    from vprbench.yamlfile import parse_overrides

    try:
        k_values = parse_ks(ks)
    except ValueError as exc:
        raise VPRBenchError(str(exc)) from exc
    picked = [s.strip() for s in only.split(",") if s.strip()] if only else None
    base = ExtractSettings(model=model_name, weights=weights, overrides=parse_overrides(overrides),
                           device=device, workers=workers)  # fmt: skip
    with json_mode(as_json) as emit, progress_bars() as bars:
        record, path = run_audit(dataset, base, k_values, data_root(root), cache_root(cache_dir),
                                 results_root(results_dir), image_size=image_size, pca_dim=pca_dim,
                                 pca_fit=pca_fit, only=picked, progress=bars, correction=correction,
                                 log=lambda text: err_console.print(text, soft_wrap=True))  # fmt: skip
        print_table(audit_table(record))
        for s in record["skipped"]:
            console.print(f"not audited: {s['setting']}: {s['reason']}", soft_wrap=True)
        stats = record["statistics"]
        console.print(f"Δ: audited minus baseline on the same queries, resampled as "
                      f"{stats['resampling']}; interval: {stats.get('paired_interval')}; p: "
                      f"{stats.get('test')}; multiple comparisons: {stats['multiple_comparisons']}; "
                      f"* {stats['significant']}.", soft_wrap=True)  # fmt: skip
        if stats.get("note"):
            err_console.print(f"[yellow]{stats['note']}[/]", soft_wrap=True)
        console.print(f"audit record: {path}", soft_wrap=True)
        emit(record)
