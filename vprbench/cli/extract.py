"""`vprbench extract` and `vprbench evaluate`: descriptors into the cache, then recall@k into a run
record."""

from __future__ import annotations

import click

from vprbench.choices import (
    CLUSTER_HELP,
    DEFAULT_KS,
    NO_POSITIVE_POLICIES,
    SEARCHES,
)
from vprbench.cli.common import (
    describe_intervals,
    extraction_options,
    json_mode,
    results_option,
    run_extract,
    settings_from_options,
)
from vprbench.errors import VPRBenchError
from vprbench.paths import cache_root, results_root
from vprbench.ui import (
    console,
    err_console,
    print_table,
    recall_table,
    robotics_table,
)


def _describe_extract(result) -> None:
    d = result.descriptors
    state = (
        f"computed in {result.seconds:.1f}s" if result.computed else "cached, nothing recomputed"
    )
    console.print(
        f"{result.model.name}: {d.shape('database')[0]:,} database + {d.shape('queries')[0]:,} "
        f"query descriptors of dim {d.shape('database')[1]} ({state}) -> {d.path}",
        soft_wrap=True,
    )
    if d.paths["database"] != d.path:
        shared = d.key["database_entry"]["dataset"]
        console.print(f"database: shared database '{shared}' -> {d.paths['database']}",
                      soft_wrap=True)  # fmt: skip
    if result.model.batch_dependent:
        console.print(
            f"batch-dependent model: batch size {result.batch_size} ({result.batch_size_source}), "
            f"{result.batch_order}",
            soft_wrap=True,
        )
    console.print(f"preprocessing: {result.preprocess.describe()}", soft_wrap=True)
    for difference in (result.official or {}).get("differences", []):
        err_console.print(f"[yellow]not the official pipeline:[/] {difference}", soft_wrap=True)
    skipped = int((~d.database_valid).sum() + (~d.queries_valid).sum())
    if skipped:
        err_console.print(f"[yellow]{skipped} unreadable image(s) skipped (--on-bad-image skip)[/]")


@click.command("extract")
@extraction_options
def extract_cmd(dataset, root, cache_dir, **options) -> None:
    """Extract descriptors of a dataset into the HDF5 cache (resumable)."""
    _, result = run_extract(dataset, settings_from_options(**options), root, cache_dir)
    _describe_extract(result)


@click.command("evaluate")
@extraction_options
@click.option("--k", "ks", default=",".join(map(str, DEFAULT_KS)), show_default=True)
@click.option("--pca", "pca_dim", type=int, default=None, help="Reduce descriptors to DIM by PCA.")
@click.option("--pca-fit", default=None, help="Dataset whose descriptors the PCA is fitted on.")
@click.option(
    "--per-city", is_flag=True, help="MSLS challenge: retrieve each query within its city."
)
@click.option(
    "--no-positive-policy",
    type=click.Choice(NO_POSITIVE_POLICIES),
    default="miss",
    show_default=True,
    help="miss: queries without positives count as misses; exclude: drop them.",
)
@click.option(
    "--search",
    type=click.Choice(SEARCHES),
    default="exact",
    show_default=True,
    help="exact (as every official evaluation; on the GPU with --device cuda) or an approximate "
    "faiss index; the recall it loses against exact search is printed and recorded.",
)
@click.option("--cluster", default="protocol", show_default=True, help=CLUSTER_HELP)
@click.option(
    "--metrics",
    "metrics",
    default="",
    help="Also compute robotics metrics, comma-separated: auc-pr, r@100p (both in VPR-Bench's and "
    "VPR_Tutorial's conventions), precision (precision@k), map (MSLS mAP@k); or all.",
)
@click.option(
    "--gt-soft",
    "gt_soft",
    type=float,
    default=None,
    metavar="THRESHOLD",
    help="VPR_Tutorial's GTsoft for the multi-matching AUC-PR / R@100P: the protocol's positive "
    "rule widened to THRESHOLD (metres, or frames), over the dataset's stored coordinates.",
)
@click.option(
    "--rerank",
    default=None,
    help="Re-rank the global top-k with a registered re-ranker (e.g. selavpr).",
)
@click.option(
    "--rerank-k",
    type=int,
    default=None,
    help="Candidates to re-rank (default: the re-ranker's official number).",
)
@click.option(
    "--rerank-option",
    "rerank_options",
    multiple=True,
    help="A re-ranker option as NAME=VALUE (selavpr: one_match=official|count).",
)
@results_option
@click.option(
    "--json", "as_json", is_flag=True, help="Print the run record as JSON on stdout only."
)
def evaluate_cmd(
    dataset,
    root,
    cache_dir,
    ks,
    pca_dim,
    pca_fit,
    per_city,
    no_positive_policy,
    search,
    cluster,
    metrics,
    gt_soft,
    rerank,
    rerank_k,
    rerank_options,
    results_dir,
    as_json,
    **options,
) -> None:
    """Recall@k of a model on a dataset (extracting first if the cache lacks it)."""
    rerank_request = None
    if rerank is not None:
        from vprbench.rerank import get_reranker

        reranker = get_reranker(rerank)
        parsed = {}
        for item in rerank_options:
            name, sep, value = item.partition("=")
            if not sep:
                raise VPRBenchError(f"--rerank-option {item!r}: expected NAME=VALUE")
            parsed[name.strip()] = value.strip()
        rerank_request = {"reranker": reranker, "k": rerank_k, "options": parsed}
    elif rerank_k is not None or rerank_options:
        raise VPRBenchError("--rerank-k and --rerank-option need --rerank NAME")
    metrics = parse_metrics(metrics)
    if gt_soft is not None and not {"auc-pr", "r@100p"} & set(metrics):
        raise VPRBenchError(
            "--gt-soft widens the positives of --metrics auc-pr / r@100p: ask for one"
        )
    with json_mode(as_json) as emit:
        emit(_evaluate(dataset, root, cache_dir, ks, pca_dim, pca_fit, per_city,
                       no_positive_policy, search, results_dir, options, cluster,
                       metrics, rerank_request, gt_soft))  # fmt: skip


def _ranks(device: str) -> tuple[int, int]:
    """(rank, world): every rank of a torchrun group runs `vprbench evaluate`, so it shards the search."""
    from vprbench.extract.distributed import process_group

    return process_group(device)


def _with_local_features(rerank, dataset, settings, cache_dir):
    """The re-ranking request with its local features extracted (cached)."""
    if rerank is None:
        return None
    from vprbench.evaluate.rerank import extract_local
    from vprbench.ui import progress_bars

    with progress_bars() as bars:
        local = extract_local(dataset, settings, cache_root(cache_dir), rerank["reranker"], bars)
    console.print(f"local features for {rerank['reranker'].name}: {local.descriptors.path}",
                  soft_wrap=True)  # fmt: skip
    return {**rerank, "local": local.descriptors}


def parse_metrics(text: str) -> tuple[str, ...]:
    """``--metrics``: names of ROBOTICS_METRICS, comma-separated, or ``all``; in their order."""
    from vprbench.choices import ROBOTICS_METRICS

    names = {n.strip().lower() for n in text.split(",") if n.strip()}
    if "all" in names:
        return ROBOTICS_METRICS
    unknown = sorted(names - set(ROBOTICS_METRICS))
    if unknown:
        raise VPRBenchError(
            f"--metrics: unknown {', '.join(unknown)}; expected some of "
            f"{', '.join(ROBOTICS_METRICS)}, or all"
        )
    return tuple(m for m in ROBOTICS_METRICS if m in names)


def _evaluate(dataset, root, cache_dir, ks, pca_dim, pca_fit, per_city, no_positive_policy,
              search, results_dir, options, cluster="protocol", metrics=(),
              rerank=None, gt_soft=None) -> dict:  # fmt: skip
    from vprbench.evaluate.metrics import parse_ks

    try:
        k_values = parse_ks(ks)
    except ValueError as exc:
        raise VPRBenchError(str(exc)) from exc
    if (pca_dim is None) != (pca_fit is None):
        raise VPRBenchError("--pca DIM and --pca-fit DATASET go together")
    settings = settings_from_options(**options)  # checks the model and weights: no torch yet
    ds, result = run_extract(dataset, settings, root, cache_dir)
    from vprbench.evaluate.pca import load_or_fit_pca
    from vprbench.evaluate.run import evaluate

    _describe_extract(result)
    pca = None
    if pca_dim is not None:
        _, fit_on = run_extract(pca_fit, settings, root, cache_dir)
        pca = load_or_fit_pca(cache_root(cache_dir), fit_on.descriptors, pca_dim)
        console.print(f"PCA to {pca.dim} dims, fitted on {pca_fit}: {pca.path}", soft_wrap=True)
    try:
        record, path = evaluate(
            ds,
            result,
            k_values,
            no_positive_policy,
            results_root(results_dir),
            settings.device,
            pca,
            per_city,
            search=search,
            cluster=cluster,
            metrics=metrics,
            rerank=_with_local_features(rerank, ds, settings, cache_dir),
            gt_soft=gt_soft,
            group=_ranks(settings.device),
        )
    except ValueError as exc:
        raise VPRBenchError(str(exc)) from exc
    shown = set((result.official or {}).get("differences", []))  # printed with the extraction
    for difference in (record["settings"]["official"] or {}).get("differences", []):
        if difference not in shown:
            err_console.print(f"[yellow]not the official pipeline:[/] {difference}", soft_wrap=True)
    if record["results"]["ground_truth"]:
        print_table(recall_table([record]))
        describe_intervals(record)
    else:
        console.print(
            f"'{dataset}' has no ground truth here: predictions written, no recall computed"
        )
    if record["results"].get("metrics"):
        print_table(robotics_table([record]))
    loss = record["results"].get("search_loss")
    if loss:
        shown = ", ".join(f"R@{k} {100 * v:+.2f}" for k, v in loss.items())
        console.print(
            f"{search} search lost against exact search (points): {shown}", soft_wrap=True
        )
    for label, file in record["files"].items():
        console.print(f"{label}: {file}", soft_wrap=True)
    console.print(f"run record: {path}", soft_wrap=True)
    return record
