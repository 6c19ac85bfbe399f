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


def run_labels(a: dict, b: dict) -> tuple[str, str]:
    """Names for two run records that tell them apart: the variant or model name, then, where those
    are equal, what differs: the weights, the model options, the pipeline settings, the training
    run, and at last the run id."""
    base = [(r.get("ablation") or {}).get("variant") or r["model"]["name"] for r in (a, b)]
    if base[0] != base[1]:
        return base[0], base[1]
    for facet in (_weights_facet, _options_facet, _settings_facet, _training_facet):
        shown = [facet(a, b), facet(b, a)]
        if shown[0] != shown[1]:
            return tuple(f"{base[0]} ({s})" for s in shown)  # type: ignore[return-value]
    return a["run_id"], b["run_id"]


def _weights_facet(r: dict, _: dict) -> str:
    w = r["model"]["weights"]
    if w.get("random_init"):
        return "random init"
    source = str(w.get("source") or "built-in weights")
    name = Path(source.split("#", 1)[0]).name or source
    if w.get("sha256"):
        return f"weights {name} {w['sha256'][:8]}"
    return f"weights {name}"


def _options_facet(r: dict, other: dict) -> str:
    mine, theirs = r["model"].get("options") or {}, other["model"].get("options") or {}
    differ = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
    return ", ".join(f"{k}={mine.get(k)}" for k in differ)


def _settings_facet(r: dict, other: dict) -> str:
    def flat(record: dict) -> dict:
        s = record["settings"]
        pre = s.get("preprocess") or {}
        size = pre.get("image_size")
        return {
            "size": "native" if size is None else "x".join(map(str, size)),
            "resize": pre.get("resize"), "antialias": pre.get("antialias"),
            "interpolation": pre.get("interpolation"), "dtype": s.get("dtype"),
            "batch": s.get("batch_size"), "order": s.get("batch_order"),
            "pca": (s.get("pca") or {}).get("dim"), "search": (s.get("search") or {}).get("kind"),
        }  # fmt: skip

    mine, theirs = flat(r), flat(other)
    return ", ".join(f"{k} {mine[k]}" for k in mine if mine[k] != theirs[k])


def _training_facet(r: dict, _: dict) -> str:
    ablation = r.get("ablation") or {}
    train = ablation.get("train") or []
    parts = [f"seed {ablation['seed']}"] if "seed" in ablation else []
    parts += [Path(t).name for t in train]
    return ", ".join(parts)
