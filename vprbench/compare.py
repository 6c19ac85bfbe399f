"""Is a difference real? Two run records on the same queries: paired difference of R@k with its
bootstrap interval, and McNemar's exact test on the per-query hits (vprbench/metrics.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from vprbench.errors import VPRBenchError
from vprbench.metrics import PairedComparison, first_hit_rank, hits_at_k, paired_comparison


def load_run(spec: str, results_dir: Path) -> dict:
    """A run record by path, or by run id under ``results_dir/runs``."""
    path = Path(spec)
    if not path.is_file():
        path = Path(results_dir) / "runs" / f"{spec}.json"
    if not path.is_file():
        raise VPRBenchError(
            f"{spec}: no such run record (a .json path or a run id under {results_dir}/runs)"
        )
    try:
        record = json.loads(path.read_text())
    except ValueError as exc:
        raise VPRBenchError(f"{path}: not a run record ({exc})") from None
    if "results" not in record or "protocol" not in record:
        raise VPRBenchError(f"{path}: not a run record")
    return record


def _ranks(record: dict, positives) -> np.ndarray:
    with np.load(record["files"]["predictions"]) as z:
        if "first_hit_rank" in z:
            return z["first_hit_rank"]
        return first_hit_rank(z["indices"], positives)


def compare_runs(a: dict, b: dict, ks: list[int]) -> list[PairedComparison]:
    """A minus B at each k, on the queries both evaluate. Refuses runs that are not on the same
    queries and ground truth, or that count queries without positives differently."""
    from vprbench.datasets.formatted import load_formatted
    from vprbench.evaluate import evaluated_queries
    from vprbench.paths import data_root

    for field, what in (
        ("name", "protocol"),
        ("gt_digest", "ground truth"),
        ("num_queries", "queries"),
    ):
        if a["protocol"][field] != b["protocol"][field]:
            raise VPRBenchError(
                f"the runs are on different {what} ({a['protocol'][field]} vs {b['protocol'][field]}): "
                "a paired comparison needs the same queries and ground truth"
            )
    policy = a["settings"]["no_positive_policy"]
    if b["settings"]["no_positive_policy"] != policy:
        raise VPRBenchError(
            "the runs count queries without positives differently (--no-positive-policy)"
        )
    dataset = load_formatted(a["protocol"]["name"], data_root())
    if dataset.digest != a["protocol"]["gt_digest"]:
        raise VPRBenchError(
            f"dataset '{dataset.name}' has changed since these runs; evaluate again"
        )
    keep = evaluated_queries(dataset, policy)
    ra, rb = _ranks(a, dataset.positives), _ranks(b, dataset.positives)
    return [paired_comparison(hits_at_k(ra, k)[keep], hits_at_k(rb, k)[keep], k) for k in ks]
