"""Is a difference real? Two run records on the same queries: paired difference of R@k with its
interval and a paired test on the per-query hits, resampling the queries by the runs' cluster rule
(independent queries: Tango's interval and McNemar's exact test; clusters or blocks: their bootstrap
and the sign-flip test; vprbench/metrics.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from vprbench.errors import VPRBenchError
from vprbench.evaluate.clusters import run_resampling, same_resampling
from vprbench.evaluate.metrics import PairedComparison, Resampling, hits_at_k, paired_comparison


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


def query_outcomes(record: dict) -> tuple[np.ndarray, np.ndarray]:
    """(first-hit rank [Nq], evaluated [Nq] bool) of a run, from its predictions file; refuses a
    record whose file is gone or predates per-query results."""
    path = Path(record["files"]["predictions"])
    try:
        with np.load(path) as z:
            if "first_hit_rank" in z and "evaluated" in z:
                return z["first_hit_rank"], z["evaluated"].astype(bool)
    except (OSError, ValueError) as exc:
        raise VPRBenchError(f"{path}: cannot read the run's predictions ({exc})") from None
    raise VPRBenchError(
        f"{path}: no per-query hit ranks (a run without ground truth, or from an older vprbench); "
        "evaluate again"
    )


def saved_width(record: dict) -> int:
    """How many neighbours per query the run's predictions file holds: the largest k it can tell."""
    path = Path(record["files"]["predictions"])
    try:
        with np.load(path) as z:
            return int(z["indices"].shape[1])
    except (OSError, ValueError, KeyError) as exc:
        raise VPRBenchError(f"{path}: cannot read the run's predictions ({exc})") from None


def compare_with_resampling(
    a: dict, b: dict, ks: list[int]
) -> tuple[list[PairedComparison], Resampling]:
    """A minus B at each k, on the queries both evaluate. Refuses runs that are not on the same
    queries and ground truth, that count queries without positives differently, or a k beyond the
    neighbours a run saved (a hit past them is unknown, not a miss), and runs whose queries are
    resampled by different cluster rules."""
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
    for record, label in ((a, "A"), (b, "B")):
        width = saved_width(record)
        if max(ks) > width:
            raise VPRBenchError(
                f"R@{max(ks)} needs each query's top {max(ks)}, but run {label} "
                f"({record['run_id']}) saved its top {width}: evaluate it again with --k "
                f"including {max(ks)}"
            )
    (ra, ea), (rb, eb) = query_outcomes(a), query_outcomes(b)
    if not np.array_equal(ea, eb):
        raise VPRBenchError("the runs evaluate different queries: not a paired comparison")
    resampling = same_resampling(run_resampling(a, ea), run_resampling(b, eb))
    return [
        paired_comparison(hits_at_k(ra, k)[ea], hits_at_k(rb, k)[eb], k, resampling) for k in ks
    ], resampling
