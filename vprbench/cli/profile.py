"""`vprbench profile MODEL ...`: parameters, FLOPs, latency and peak memory, against a reference."""

from __future__ import annotations

import click

from vprbench.choices import (
    DTYPE_NAMES,
)
from vprbench.cli.common import change, json_mode, results_option
from vprbench.errors import VPRBenchError
from vprbench.paths import results_root
from vprbench.ui import (
    breakdown_table,
    console,
    err_console,
    print_table,
    profile_table,
)


@click.command("profile")
@click.argument("models", nargs=-1, required=True)
@click.option("--image-size", nargs=2, type=int, default=None, metavar="H W")
@click.option("--batch-size", type=int, default=1, show_default=True)
@click.option("--dtype", type=click.Choice(DTYPE_NAMES), default="fp32", show_default=True)
@click.option("--device", default="cpu", show_default=True)
@click.option(
    "--threads",
    type=int,
    default=None,
    help="CPU threads (default: the cores the load average leaves free).",
)
@click.option(
    "--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Option for every model."
)
@click.option("--pca", "pca_dim", type=int, default=None, help="Count a PCA to DIM as well.")
@click.option("--warmup", type=int, default=3, show_default=True)
@click.option("--repeats", type=int, default=10, show_default=True)
@click.option("--vs", "reference", default=None, help="Reference model (default: the first named).")
@click.option("--force", is_flag=True, help="Measure again even if a profile of this key exists.")
@click.option("--rerank", default=None, metavar="NAME",
              help="Also the cost of this re-ranker (of one of MODELS): local features, bytes per "
              "image, matching time per query.")  # fmt: skip
@click.option("--rerank-k", type=int, default=None, help="Candidates a query (default: official).")
@click.option("--rerank-repeats", type=int, default=3, show_default=True,
              help="Timed queries of the matching (after one warm-up).")  # fmt: skip
@results_option
@click.option("--json", "as_json", is_flag=True, help="Print the profiles as JSON on stdout only.")
def profile_cmd(models, image_size, batch_size, dtype, device, threads, overrides, pca_dim, warmup,
                repeats, reference, force, rerank, rerank_k, rerank_repeats, results_dir,
                as_json) -> None:  # fmt: skip
    """Parameters, fvcore FLOPs, latency and memory of MODELS; reductions against a reference."""
    with json_mode(as_json) as emit:
        emit(_profile(models, image_size, batch_size, dtype, device, threads, overrides, pca_dim,
                      warmup, repeats, reference, force, results_dir,
                      (rerank, rerank_k, rerank_repeats)))  # fmt: skip


def _bytes(n: int) -> str:
    return f"{n / 2**20:.2f} MiB" if n >= 2**20 else f"{n / 2**10:.1f} KiB"


def _seconds(s: float) -> str:
    return f"{s:.3f} s" if s >= 1 else f"{1000 * s:.2f} ms"


def rerank_line(record: dict) -> str:
    """One profile's re-ranking cost in words."""
    rr = record["rerank"]
    size = rr["local_bytes_per_image"]
    m = rr["matching"]
    return (f"{record['model']} + re-ranker {rr['name']}: local features "
            f"{rr['local_features']['image_ms_median']:.1f} ms an image, {_bytes(size['fp32'])} "
            f"an image in fp32 ({_bytes(size['fp16'])} with --store fp16); matching the top "
            f"{rr['k']}: {_seconds(m['query_s_median'])} a query (median of {m['repeats']}, "
            f"{m['candidates']}); {_seconds(rr['query_s'])} a query in all")  # fmt: skip


def _profile(models, image_size, batch_size, dtype, device, threads, overrides, pca_dim, warmup,
             repeats, reference, force, results_dir, rerank=(None, None, 3)) -> dict:  # fmt: skip
    from vprbench.models.registry import check_model_request
    from vprbench.yamlfile import parse_overrides

    if batch_size < 1 or repeats < 1 or warmup < 0:
        raise VPRBenchError("--batch-size and --repeats must be >= 1, --warmup >= 0")
    reference = reference or models[0]
    names = list(dict.fromkeys([*models, reference]))
    for name in names:  # before torch is imported
        check_model_request(name, parse_overrides(overrides))
    if rerank[0] is not None:
        from vprbench.rerank import get_reranker

        owner = get_reranker(rerank[0]).model
        if owner not in names:
            raise VPRBenchError(f"--rerank {rerank[0]} matches the local features of '{owner}': "
                                f"profile that model")  # fmt: skip
        if rerank[2] < 1:
            raise VPRBenchError("--rerank-repeats must be >= 1")

    import torch

    from vprbench.profile.run import ProfileSettings, profile_model, reductions

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise VPRBenchError("--device cuda requested, but CUDA is not available here")
    settings = ProfileSettings(
        tuple(image_size) if image_size else None, batch_size, dtype, device, threads, warmup,
        repeats, pca_dim, *rerank,
    )  # fmt: skip
    records = []
    for name in names:
        err_console.print(f"profiling {name} ...")
        records.append(
            profile_model(
                name, parse_overrides(overrides), settings, results_root(results_dir), force
            )
        )
    print_table(profile_table(records, settings))
    print_table(breakdown_table(records))
    for r in records:
        threads, load = r.get("threads"), r.get("load_average") or {}
        if threads:
            before = load.get("before")
            shown = (
                f", load average {before:.2f} before timing"
                if before is not None and "load average" not in threads["source"]
                else ""
            )
            console.print(f"{r['model']}: timed with {threads['used']} thread(s) "
                          f"({threads['source']}){shown}{' (cached)' if r['cached'] else ''}",
                          soft_wrap=True)  # fmt: skip
        for warning in r.get("warnings", []):
            err_console.print(f"[yellow]{r['model']}: {warning}[/]", soft_wrap=True)
        if "rerank" in r:
            console.print(rerank_line(r), soft_wrap=True)
    for row in reductions(records, reference):
        if row["model"] != reference and None not in (row["params"], row["flops"], row["latency"]):
            console.print(
                f"{row['model']} vs {reference}: "
                + ", ".join(
                    change(row[key], less, more, noun)
                    for key, less, more, noun in (
                        ("params", "fewer", "more", "parameters"),
                        ("flops", "fewer", "more", "FLOPs"),
                        ("latency", "lower", "higher", "latency"),
                    )
                )
            )
    unused = [
        f"{r['model']}: "
        + ", ".join(f"{m} {n:,}" for m, n in r["params"]["unused_by_module"].items())
        for r in records
        if r["params"]["unused"]
    ]
    if unused:
        console.print(
            "Unused: released parameters no descriptor depends on (in params, as the official "
            "classes count them): " + "; ".join(unused)
        )
    not_counted = sorted({op for r in records for op in r["flops"]["not_counted_ops"]})
    console.print(
        "FLOPs: fvcore counts one multiply-add as one flop (shown as GMACs); GFLOPs = 2 x GMACs. "
        "Not counted (element-wise, fvcore's convention): " + ", ".join(not_counted),
        soft_wrap=True,
    )
    console.print(
        f"Latency: median \\[p25-p75] of {repeats} runs after {warmup} warm-up runs, batch "
        f"{batch_size}, input tensors already in memory (no data loading).",
        soft_wrap=True,
    )
    for r in records:
        state = "cached" if r.get("cached") else "measured"
        console.print(f"{r['model']}: {state}", soft_wrap=True)
    return {"profiles": records, "reductions": reductions(records, reference)}
