"""Evaluate cached descriptors on a formatted dataset: exact search, recall@k, run record on disk."""

from __future__ import annotations

import json
import platform
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from vprbench import __version__
from vprbench.atomic import write_npz, write_text
from vprbench.choices import DEFAULT_KS
from vprbench.datasets.formatted import FormattedDataset, load_groups
from vprbench.evaluate.metrics import (  # parse_ks: re-exported
    NO_POSITIVE_POLICIES,
    Resampling,
    first_hit_rank,
    hits_at_k,
    parse_ks,  # noqa: F401
    recall_at_k,
    recall_interval,
)
from vprbench.evaluate.msls import msls_prediction_lines
from vprbench.evaluate.pca import PCA, pca_record
from vprbench.evaluate.search import (
    SEARCHES,
    approximate_params,
    default_backend,
    exact_search,
    grouped_search,
    sharded_search,
)
from vprbench.extract.cache import key_digest
from vprbench.extract.settings import ExtractResult

SEARCH_INDEX = {
    "exact": "exact L2 over database chunks with a running top-k (torch matmul top-k, or "
    "faiss.IndexFlatL2 for small searches on the CPU)",
    "hnsw": "faiss.IndexHNSWFlat",
    "ivf-flat": "faiss.IndexIVFFlat",
    "ivf-pq": "faiss.IndexIVFPQ",
}

SAVED_TOP_K = 100


def evaluate(
    dataset: FormattedDataset,
    extracted: ExtractResult,
    ks: list[int] | tuple[int, ...] = DEFAULT_KS,
    no_positive_policy: str = "miss",
    results_dir: Path = Path("results"),
    device: str = "cpu",
    pca: PCA | None = None,
    per_city: bool = False,
    tags: dict | None = None,
    search: str = "exact",
    cluster: str = "protocol",
    metrics: tuple[str, ...] = (),
    rerank: dict | None = None,
    group: tuple[int, int] | None = None,
    gt_soft: float | None = None,
) -> tuple[dict, Path]:
    """Search the database with every query (after ``pca``, if given), compute recall@k, and write
    the run record (JSON) and the top-K predictions (.npz) under ``results_dir/runs``. ``tags``
    (recipe, variant, seed, training runs) go into the record and its id. ``search``: "exact" (every
    official evaluation; on a CUDA ``device`` in torch) or an approximate faiss index (hnsw, ivf-flat,
    ivf-pq), whose recall loss against exact search is recorded. ``cluster``: how the intervals
    resample the queries ("protocol": the protocol's rule in datasets.yaml; vprbench.evaluate.clusters).
    ``metrics``: robotics metrics to add (choices.ROBOTICS_METRICS; vprbench.evaluate.robotics).
    ``rerank``: {"reranker", "k", "options", "local" (the cached local features)}: the top k
    re-ordered by the re-ranker (vprbench.rerank); the recall is then the re-ranked one, the global
    stage's kept as ``recall_global``. ``group`` (rank, world size): the process group every rank of
    which calls this function (`vprbench evaluate` under torchrun): exact search is then sharded
    between them and rank 0 alone writes files; None: this process alone (training's validation calls
    it on rank 0 only). ``gt_soft``: VPR_Tutorial's GTsoft for ``metrics``, the protocol's rule widened
    to that threshold (vprbench.evaluate.robotics.soft_positives).
    Returns (record, record path)."""
    from vprbench.evaluate.clusters import canonical, query_clusters, record_entry, resampling_of

    if no_positive_policy not in NO_POSITIVE_POLICIES:
        raise ValueError(f"no_positive_policy must be one of {NO_POSITIVE_POLICIES}")
    if search not in SEARCHES:
        raise ValueError(f"search must be one of {SEARCHES}, got {search!r}")
    if rerank is not None and (search != "exact" or pca is not None or per_city):
        raise ValueError("--rerank re-orders an exact global search without --pca or --per-city")
    if rerank is not None and {"auc-pr", "r@100p"} & set(metrics):
        raise ValueError(
            "--metrics auc-pr and r@100p threshold the global similarity, not the re-ranker's score: "
            "not computed for a re-ranked run (precision and map are)"
        )
    cached = extracted.descriptors
    n_valid_db = int(cached.database_valid.sum())
    # exact search saves the top-100 (compare reads R@k from it later); an approximate index is
    # searched for the largest k reported, which is what its parameters describe (search.HNSW)
    top_k = min(max(SAVED_TOP_K if search == "exact" else 1, max(ks)), len(cached.database))
    if max(ks) > n_valid_db:
        raise ValueError(f"k={max(ks)} exceeds the {n_valid_db} database images")
    if pca is not None:
        database, queries = pca.transform(cached.database), pca.transform(cached.queries)
    else:  # the database streams from disk by chunks of rows: never read whole
        database, queries = cached.rows("database"), cached.queries
    clusters = query_clusters(dataset, cluster)  # before the search: a bad --cluster fails early
    cluster_key = canonical(cluster, dataset)  # None for the protocol's own rule: the old run ids
    groups = load_groups(dataset) if per_city else None
    if per_city and groups is None:
        raise ValueError(f"--per-city: dataset '{dataset.name}' has no city groups")

    # with ranks (every rank of a torchrun group here) each rank searches a shard of the database and
    # the top-k are merged (exact search over the whole database: the same neighbours); rank 0 alone
    # writes the files
    rank, world = group or (0, 1)

    def run_search(kind: str) -> tuple[np.ndarray, np.ndarray]:
        if world > 1 and kind == "exact" and groups is None:
            found = sharded_search(database, queries, top_k, cached.database_valid, rank, world,
                                   device)  # fmt: skip
        elif groups is not None:
            found = grouped_search(database, queries, top_k, groups["database"], groups["queries"],
                                   cached.database_valid, kind, device)  # fmt: skip
        else:
            found = exact_search(database, queries, top_k, cached.database_valid, kind, device)
        found[0][~cached.queries_valid] = -1  # a skipped query retrieves nothing: always a miss
        return found

    indices, distances = run_search(search)
    has_ground_truth = any(p.size for p in dataset.positives)
    # a model may leave its descriptors unnormalised (SelaVPR++'s +-1 codes): say so, not "cosine"
    sample = np.flatnonzero(cached.queries_valid)[:8]
    unit = pca is not None or not len(sample) or bool(np.allclose(
        np.linalg.norm(np.asarray(queries[sample], dtype=np.float32), axis=1), 1.0, atol=1e-2))  # fmt: skip
    rerank_entry, global_indices = None, None
    if rerank is not None:
        from vprbench.evaluate.rerank import apply_rerank

        global_indices = indices
        indices, distances, rerank_entry = apply_rerank(indices, distances, rerank, device,
                                                        group if world > 1 else None)  # fmt: skip
    result = (
        recall_at_k(indices, dataset.positives, ks, no_positive_policy)
        if has_ground_truth
        else None
    )
    exact_recall = None
    if search != "exact" and result is not None:
        # what the approximate index costs: the same evaluation with exact search
        exact_indices, _ = run_search("exact")
        exact_recall = recall_at_k(exact_indices, dataset.positives, ks, no_positive_policy).recall
    model = extracted.model
    # Everything that changes the record: two evaluations that differ in any of these keep two records.
    run_key = {
        "descriptors": cached.key,
        "pca": pca.key if pca else None,
        "per_city": per_city,
        "ks": list(ks),
        "no_positive_policy": no_positive_policy,
        "tags": tags,
        **({"search": search} if search != "exact" else {}),  # exact: the ids of earlier runs
        **({"cluster": cluster_key} if cluster_key else {}),
        **({"metrics": list(metrics)} if metrics else {}),  # none: the ids of earlier runs
        **({"gt_soft": gt_soft} if gt_soft is not None else {}),
        **(
            {
                "rerank": {
                    "name": rerank_entry["name"],
                    "k": rerank_entry["k"],
                    "options": rerank_entry["options"],
                    "local": rerank["local"].key,
                }
            }
            if rerank_entry
            else {}
        ),  # fmt: skip
        # another device's float rounding can reorder near-ties: a CUDA run keeps its own record
        **(
            {"search_device": str(device).split(":")[0]}
            if not str(device).startswith("cpu")
            else {}
        ),
    }
    run_id = f"{model.name}__{dataset.name}__{key_digest(run_key)}"
    runs = Path(results_dir) / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    predictions_path = runs / f"{run_id}.predictions.npz"
    ranks = first_hit_rank(indices, dataset.positives) if has_ground_truth else None
    evaluated = evaluated_queries(dataset, no_positive_policy)
    resampling = resampling_of(clusters, evaluated)
    extra = {} if ranks is None else {"first_hit_rank": ranks, "evaluated": evaluated}
    if clusters["clusters"] is not None:
        extra["clusters"] = clusters["clusters"]  # the paired tests of compare, audit, report
    if global_indices is not None:
        extra["global_indices"] = global_indices  # before re-ranking
    robotics = None
    if metrics and has_ground_truth:
        from vprbench.evaluate.robotics import record_metrics

        robotics = record_metrics(metrics, indices, distances, dataset, queries, database, cached,
                                    evaluated, ks, pca is None and unit, gt_soft, groups)  # fmt: skip
        extra |= robotics.pop("curve_arrays")  # VPR-Bench's curve: one point per distinct score
    # per-query results (hit rank, top-K indices and distances): compare and audit never re-extract
    if rank == 0:
        write_npz(predictions_path, indices=indices, distances=distances, **extra)
    files = {"descriptors": str(cached.path), "predictions": str(predictions_path)}
    if cached.paths["database"] != cached.path:  # a shared database: its own entry
        files["database_descriptors"] = str(cached.paths["database"])
    notes = []
    if dataset.manifest.get("source_format", "").startswith("msls"):
        try:
            text = msls_prediction_lines(dataset, indices)
        except ValueError as exc:
            notes.append(f"MSLS prediction file not written: {exc}")
        else:
            msls_path = runs / f"{run_id}.msls_predictions.txt"
            if rank == 0:
                write_text(msls_path, text)
            files["msls_predictions"] = str(msls_path)
    record = {
        "run_id": run_id,
        # microseconds: the report keeps the newest of records written within one second
        "created": datetime.now(timezone.utc).astimezone().isoformat(timespec="microseconds"),
        "vprbench_version": __version__,
        "model": {
            "name": model.name,
            "options": model.options,
            "descriptor_dim": int(database.shape[1]),
            "batch_dependent": model.batch_dependent,
            "weights": model.weights_info,
        },
        "protocol": {
            "name": dataset.name,
            "registered_protocol": dataset.manifest.get("protocol"),
            "num_database": len(dataset.database),
            "num_queries": len(dataset.queries),
            "positive_rule": dataset.manifest.get("positive_rule"),
            "threshold": dataset.manifest.get("threshold"),
            "gt_digest": dataset.digest,
            # the protocol's shared database (its descriptors one entry for every protocol over it)
            "database_shared": cached.key.get("database_entry", {}).get("dataset"),
        },
        "settings": {
            "preprocess": extracted.preprocess.as_dict(),
            "dtype": cached.key["dtype"],
            "store": cached.key.get("store", "fp32"),  # the precision the descriptors were kept in
            # the card's official pipeline and what this run does otherwise (vprbench.extract.official)
            "official": _official(extracted.official, pca),
            "batch_size": extracted.batch_size,
            "batch_size_source": extracted.batch_size_source,
            "batch_order": extracted.batch_order or None,
            "device": device,
            "on_bad_image": cached.key["on_bad_image"],
            "search": {
                "kind": search,
                "index": SEARCH_INDEX[search],
                "exact": search == "exact",
                # torchrun: the database split into this many shards, one per rank, top-k merged
                **({"shards": world} if world > 1 and search == "exact" and groups is None else {}),
                "backend": default_backend(len(queries), n_valid_db, database.shape[1], device)
                if search == "exact"
                else "faiss",
                **(
                    {
                        "params": approximate_params(search, n_valid_db, database.shape[1], top_k),
                        "neighbours_saved": top_k,
                    }
                    if search != "exact"
                    else {}
                ),
                # per city (--per-city): each city searches its own index, with its own size
                **(
                    {
                        "per_group": _per_group_search(
                            search, database.shape[1], top_k, device, groups, cached.database_valid
                        )
                    }
                    if groups is not None
                    else {}
                ),  # fmt: skip
                "metric": (
                    "L2 on L2-normalised descriptors"
                    if unit
                    else "L2 on the model's own "
                    "descriptors, not unit length (e.g. +-1 codes: 4 x Hamming)"
                )
                if pca is None
                else f"L2 on PCA-{pca.dim} projections of L2-normalised descriptors "
                "(not re-normalised, as the official test.py)",
            },
            "pca": None if pca is None else pca_record(pca),
            # evaluate --rerank: the re-ranking stage, its cost; None: the global stage alone
            "rerank": rerank_entry,
            "no_positive_policy": no_positive_policy,
            "ks": list(ks),
            "per_city": per_city,
        },
        "results": {
            "recall": {} if result is None else {str(k): v for k, v in result.recall.items()},
            "ci95": {} if result is None else recall_intervals(ranks, evaluated, ks, resampling),
            # how the intervals (and compare's tests) resample the queries, and why
            "resampling": record_entry(clusters, resampling, int(evaluated.sum())),
            # approximate search only: recall with exact search, and the points it lost
            **(
                {
                    "recall_exact": {str(k): v for k, v in exact_recall.items()},
                    "search_loss": {str(k): exact_recall[k] - result.recall[k] for k in ks},
                }
                if exact_recall is not None
                else {}
            ),
            "ground_truth": has_ground_truth,
            "num_queries": len(dataset.queries),
            "num_evaluated": 0 if result is None else result.num_evaluated,
            "num_queries_without_positives": sum(1 for p in dataset.positives if p.size == 0),
            "num_skipped_database_images": int((~cached.database_valid).sum()),
            "num_skipped_query_images": int((~cached.queries_valid).sum()),
            **({"metrics": robotics} if robotics is not None else {}),
            **(
                {
                    "recall_global": {
                        str(k): v
                        for k, v in recall_at_k(
                            global_indices, dataset.positives, ks, no_positive_policy
                        ).recall.items()
                    }
                }
                if global_indices is not None and result is not None
                else {}
            ),  # fmt: skip
        },
        "files": files,
        "notes": notes,
        # which recipe, variant and seed made it, and its training runs (vprbench ablate)
        "ablation": tags,
        "environment": {
            "python": platform.python_version(),
            "torch": _version("torch"),
            "numpy": np.__version__,
            "platform": platform.platform(),
        },
    }
    record_path = runs / f"{run_id}.json"
    if rank == 0:
        write_text(record_path, json.dumps(record, indent=2) + "\n")
    return record, record_path


def _per_group_search(
    search: str, dim: int, top_k: int, device: str, groups: dict, database_valid: np.ndarray
) -> dict:
    """{group: its backend (exact) or index parameters (approximate)}: what each city's search ran."""
    out = {}
    q_groups, db_groups = np.asarray(groups["queries"]), np.asarray(groups["database"])
    for group in np.unique(q_groups):
        n_db = int((database_valid & (db_groups == group)).sum())
        n_q = int((q_groups == group).sum())
        out[str(group)] = (
            {"database": n_db, "backend": default_backend(n_q, n_db, dim, device)}
            if search == "exact"
            else {"database": n_db, "params": approximate_params(search, n_db, dim, top_k)}
        )
    return out


def _version(package: str) -> str | None:
    """An installed package's version, without importing it (a warm evaluation never imports torch)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def evaluated_queries(dataset: FormattedDataset, policy: str) -> np.ndarray:
    """[Nq] bool: the queries in the recall's denominator under ``policy``."""
    has_positive = np.array([p.size > 0 for p in dataset.positives], dtype=bool)
    return np.ones_like(has_positive) if policy == "miss" else has_positive


def recall_intervals(ranks: np.ndarray, evaluated: np.ndarray, ks, resampling: Resampling) -> dict:
    """95% interval of each R@k over the evaluated queries under ``resampling``: {"k": [low, high]}."""
    return {str(k): list(recall_interval(hits_at_k(ranks, k)[evaluated], resampling)) for k in ks}


def _official(official: dict, pca: PCA | None) -> dict | None:
    """The extraction's comparison with the card's official pipeline, with the PCA added (applied
    here, after extraction)."""
    if not official:
        return None
    from vprbench.extract.official import pca_difference

    extra = pca_difference(official.get("pca_dim"), pca.dim if pca else None)
    return {**official, "differences": official["differences"] + extra}
