"""The metrics robotics papers report beside recall@k: precision-recall curves over each query's best
match, the area under them (AUC-PR), recall at 100% precision (R@100P), precision@k and MSLS mAP@k.

Similarity is cosine: for L2-normalised descriptors, ``1 - d / 2`` of the squared L2 distance ``d``
that the search returns (after ``--pca`` the projections are not re-normalised, as the official
test.py: then the score is that same expression of their distance, a monotone function of it).

Two conventions are in use, and on the same scores they give different numbers:

``vpr-bench`` (MubarizZaffar/VPR-Bench, performance_comparison.py, git 77ad30f): ``matches`` says
  whether each query's best match is a positive, ``scores`` is its similarity; the curve is
  scikit-learn's ``precision_recall_curve(matches, scores)`` (one point per distinct score, then
  (recall 0, precision 1)); AUC-PR is ``sklearn.metrics.auc(recall, precision)`` (trapezoids); R@100P
  is the recall of the lowest threshold whose precision is 1, or 0 when the best-scored point's
  precision is below 1 (its ``compute_extendedprecision``, whose mean with that precision is the
  "extended precision" EP, also given). Recall's denominator is the number of queries whose best
  match is right, as scikit-learn's curve (a query without any positive is one more negative).
  scikit-learn's curve once stopped at the first threshold reaching full recall; the points here are
  the current one's (tested against the installed scikit-learn).
``vpr-tutorial`` (stschubert/VPR_Tutorial, evaluation/metrics.py ``createPR`` and
  ``recallAt100precision``, demo.py's ``np.trapz(P, R)``, git e071309): 100 thresholds equally spaced
  from the largest to the smallest similarity, the curve starting at (recall 0, precision 1);
  ``single`` matching takes each query's best match and divides by the queries that have a positive;
  ``multi`` matching thresholds every (database, query) similarity of the whole matrix and divides by
  the number of positive pairs (streamed here by chunks of the database: never the whole matrix).
  R@100P is the largest recall whose precision is 1; AUC-PR is ``np.trapz(P, R)``. ``GTsoft`` (pairs
  that are neither right nor wrong) is taken as a second list of positives, whose extra pairs are set
  to the smallest similarity, as createPR does; single matching refuses it, as createPR does.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

CONVENTIONS = ("vpr-bench", "vpr-tutorial-single", "vpr-tutorial-multi")
TUTORIAL_THRESHOLDS = 100  # createPR's n_thresh default


def cosine_from_squared_l2(distances: np.ndarray) -> np.ndarray:
    """Cosine similarity of L2-normalised vectors from their squared L2 distance."""
    return 1.0 - np.asarray(distances, dtype=np.float64) / 2.0


def best_matches(indices: np.ndarray, distances: np.ndarray, positives: Sequence[np.ndarray]):
    """(right [Nq] bool, score [Nq] float64) of each query's best match from a search's top-k
    (indices [Nq, K], squared L2 distances [Nq, K]). A query that retrieved nothing (a skipped query
    image, index -1) has a wrong best match at the lowest cosine, -1."""
    top = np.asarray(indices)[:, 0]
    right = np.array([t >= 0 and t in p for t, p in zip(top, positives, strict=True)], dtype=bool)
    score = np.where(top >= 0, cosine_from_squared_l2(np.asarray(distances)[:, 0]), -1.0)
    return right, score


def sklearn_pr_curve(matches: np.ndarray, scores: np.ndarray):
    """scikit-learn's ``precision_recall_curve(matches, scores)``: (precision, recall, thresholds),
    thresholds increasing, the last point (precision 1, recall 0) without a threshold. Written out
    (so that the metric does not change with scikit-learn's version) and tested against it."""
    matches = np.asarray(matches, dtype=bool)
    scores = np.asarray(scores, dtype=np.float64)
    order = np.argsort(scores, kind="mergesort")[::-1]
    scores, matches = scores[order], matches[order]
    distinct = np.flatnonzero(np.diff(scores))
    ends = np.r_[distinct, len(scores) - 1]  # the last row of each distinct score
    tps = np.cumsum(matches)[ends].astype(np.float64)
    fps = 1 + ends - tps
    precision = np.divide(tps, tps + fps, out=np.zeros_like(tps), where=(tps + fps) != 0)
    recall = np.ones_like(tps) if tps[-1] == 0 else tps / tps[-1]
    return np.r_[precision[::-1], 1.0], np.r_[recall[::-1], 0.0], scores[ends][::-1]


def _trapezoid(y: np.ndarray, x: np.ndarray) -> float:
    y, x = np.asarray(y, dtype=np.float64), np.asarray(x, dtype=np.float64)
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2.0))


def vpr_bench(right: np.ndarray, score: np.ndarray) -> dict:
    """VPR-Bench's metrics of best matches: its curve, AUC-PR, R@100P and extended precision."""
    precision, recall, thresholds = sklearn_pr_curve(right, score)
    # sklearn.metrics.auc: trapezoids over x = recall, which decreases along the curve
    auc_pr = -_trapezoid(precision, recall)
    at_lowest_recall = precision[-2]  # the best-scored point (the last one has no threshold)
    r100 = float(recall[np.flatnonzero(precision == 1)[0]]) if at_lowest_recall >= 1 else 0.0
    return {
        "auc_pr": auc_pr,
        "r_at_100p": r100,
        "extended_precision": (float(at_lowest_recall) + r100) / 2,
        "curve": {"precision": precision.tolist(), "recall": recall.tolist(),
                  "thresholds": thresholds.tolist()},
    }  # fmt: skip


def _tutorial_summary(precision: list[float], recall: list[float]) -> dict:
    p, r = np.asarray(precision), np.asarray(recall)
    return {
        "auc_pr": _trapezoid(p, r),  # demo.py: np.trapz(P, R)
        "r_at_100p": float(r[p == 1].max()),
        "curve": {"precision": p.tolist(), "recall": r.tolist()},
    }


def vpr_tutorial_single(
    right: np.ndarray,
    score: np.ndarray,
    has_positive: np.ndarray,
    n_thresh: int = TUTORIAL_THRESHOLDS,
    retrieved: np.ndarray | None = None,
) -> dict:
    """createPR(matching='single') on best matches (its argmax per query is the search's top-1: exact
    ties by lowest database index in both): thresholds over the best-match similarities of the
    queries that ``retrieved`` something (a skipped query image has no similarity to threshold; it
    still counts in the denominator when it has a positive)."""
    right, score = np.asarray(right, bool), np.asarray(score, np.float64)
    seen = np.ones(len(score), bool) if retrieved is None else np.asarray(retrieved, bool)
    right, score = right & seen, np.where(seen, score, -np.inf)
    gtp = int(np.count_nonzero(has_positive))
    precision, recall = [1.0], [0.0]
    for t in np.linspace(score[seen].max(), score[seen].min(), n_thresh):
        above = score >= t
        tp, fp = int(np.count_nonzero(right & above)), int(np.count_nonzero(~right & above))
        precision.append(tp / (tp + fp))
        recall.append(tp / gtp if gtp else float("nan"))
    return _tutorial_summary(precision, recall) | {
        "thresholds": n_thresh,
        "ground_truth_positives": gtp,
    }


def _positive_mask(positives: Sequence[np.ndarray], lo: int, hi: int) -> np.ndarray:
    """[Nq, hi - lo] bool: which database rows lo..hi-1 are positives of each query."""
    mask = np.zeros((len(positives), hi - lo), dtype=bool)
    for q, p in enumerate(positives):
        p = np.asarray(p)
        p = p[(p >= lo) & (p < hi)]
        mask[q, p - lo] = True
    return mask


def vpr_tutorial_multi(
    queries: np.ndarray,
    database,
    positives: Sequence[np.ndarray],
    database_valid: np.ndarray | None = None,
    soft_positives: Sequence[np.ndarray] | None = None,
    n_thresh: int = TUTORIAL_THRESHOLDS,
    chunk_rows: int = 8192,
    queries_valid: np.ndarray | None = None,
    similarity: str = "dot",
    groups: dict | None = None,
) -> dict:
    """createPR(matching='multi') over the whole similarity matrix (cosine: descriptor dot products),
    streamed by chunks of database rows in two passes (the range of the similarities, then the counts
    above each threshold); ``database`` may be rows read from disk (DiskRows). Database rows of
    skipped images are left out of the matrix; a skipped query's pairs get the smallest similarity
    (its positives are misses until the last threshold, where createPR counts every pair).
    ``soft_positives``: createPR's GTsoft (their other pairs get the smallest similarity too).
    ``similarity``: "dot" (cosine of L2-normalised descriptors, as createPR's S) or "l2" (1 - d/2 of
    the squared L2 distance, the best-match score of un-normalised PCA projections). ``groups``
    ({"queries": [Nq], "database": [Nd]} labels, ``--per-city``): only the pairs of one group make
    the matrix, as each city is searched alone."""
    if similarity not in ("dot", "l2"):
        raise ValueError(f"similarity must be dot or l2, got {similarity!r}")
    queries = np.asarray(queries, dtype=np.float32)
    n = database.shape[0]
    valid = np.ones(n, bool) if database_valid is None else np.asarray(database_valid, bool)
    q_valid = np.ones(len(queries), bool) if queries_valid is None else np.asarray(queries_valid)
    chunks = [(lo, min(lo + chunk_rows, n)) for lo in range(0, n, chunk_rows)]

    def similarities(lo: int, hi: int):
        rows = np.asarray(database[lo:hi], dtype=np.float32)
        sims = queries @ rows.T
        if similarity == "l2":  # 1 - (|q|^2 + |x|^2 - 2 q.x) / 2
            sims = 1 - ((queries**2).sum(1)[:, None] + (rows**2).sum(1)[None, :] - 2 * sims) / 2
        hard = _positive_mask(positives, lo, hi)
        keep = np.broadcast_to(valid[lo:hi], sims.shape)
        if groups is not None:  # a city's queries against its own database only
            keep = keep & (
                np.asarray(groups["queries"])[:, None] == groups["database"][None, lo:hi]
            )
        lowered = np.broadcast_to(~q_valid[:, None], sims.shape)  # pairs set to the minimum
        if soft_positives is not None:
            lowered = lowered | (_positive_mask(soft_positives, lo, hi) & ~hard)
        return sims, hard, keep, lowered

    # pass 1: createPR's endV = S.min() (before and after lowering: the lowered get the minimum)
    # and startV = S.max() over the pairs that keep their similarity
    top, bottom = -np.inf, np.inf
    for lo, hi in chunks:
        sims, _, keep, lowered = similarities(lo, hi)
        real = keep & q_valid[:, None]  # a skipped query's zero descriptor has no real similarity
        if real.any():
            bottom = min(bottom, float(sims[real].min()))
        if (keep & ~lowered).any():
            top = max(top, float(sims[keep & ~lowered].max()))
    top = max(top, bottom)
    thresholds = np.linspace(top, bottom, n_thresh)
    ascending = thresholds[::-1]
    tp_hist = np.zeros(n_thresh + 1, np.int64)
    all_hist = np.zeros(n_thresh + 1, np.int64)
    gtp = 0
    for lo, hi in chunks:  # pass 2: how many pairs reach each threshold, and how many are right
        sims, hard, keep, lowered = similarities(lo, hi)
        sims = np.where(lowered, bottom, sims)  # createPR: S[GTsoft & ~GT] = S.min()
        hard = hard & keep
        gtp += int(hard.sum())
        where = np.searchsorted(ascending, sims[keep], side="right")  # thresholds <= s
        all_hist += np.bincount(where, minlength=n_thresh + 1)
        tp_hist += np.bincount(np.searchsorted(ascending, sims[hard], side="right"),
                               minlength=n_thresh + 1)  # fmt: skip
    # pairs >= ascending[m] are those with searchsorted > m
    above_all = np.cumsum(all_hist[::-1])[::-1][1:]
    above_tp = np.cumsum(tp_hist[::-1])[::-1][1:]
    precision, recall = [1.0], [0.0]
    for i in range(n_thresh):  # thresholds from the largest, as createPR
        m = n_thresh - 1 - i
        tp, total = int(above_tp[m]), int(above_all[m])
        precision.append(tp / total if total else float("nan"))
        recall.append(tp / gtp if gtp else float("nan"))
    return _tutorial_summary(precision, recall) | {
        "thresholds": n_thresh,
        "ground_truth_positives": gtp,
    }


def precision_at_k(
    indices: np.ndarray,
    positives: Sequence[np.ndarray],
    ks: Sequence[int],
    evaluated: np.ndarray | None = None,
) -> dict:
    """Mean over the evaluated queries (the no-positive policy's; default all) of the share of the
    top k that are positives: {"k": value}."""
    rows = np.arange(len(indices)) if evaluated is None else np.flatnonzero(evaluated)
    out = {}
    for k in ks:
        hits = [np.isin(indices[q][:k][indices[q][:k] >= 0], positives[q]).sum() / k for q in rows]
        out[str(k)] = float(np.mean(hits)) if hits else float("nan")
    return out


def msls_map_at_k(
    indices: np.ndarray, positives: Sequence[np.ndarray], ks: Sequence[int], evaluated: np.ndarray
) -> dict:
    """mapillary_sls utils/eval.py ``mapk``: the mean over the evaluated queries of ``apk``: hits
    counted once per database image, each adding hits / rank, divided by min(positives, k). A query
    without positives (its ``apk`` divides by zero in mapillary_sls) scores 0 when evaluated ("miss")."""
    out = {}
    rows = np.flatnonzero(np.asarray(evaluated, bool))
    for k in ks:
        scores = []
        for q in rows:
            pidx = set(np.asarray(positives[q]).tolist())
            if not pidx:
                scores.append(0.0)
                continue
            ranked = [int(x) for x in indices[q][:k]]
            hits, total = 0.0, 0.0
            for i, p in enumerate(ranked):
                if p in pidx and p not in ranked[:i]:
                    hits += 1.0
                    total += hits / (i + 1.0)
            scores.append(total / min(len(pidx), k))
        out[str(k)] = float(np.mean(scores)) if scores else float("nan")
    return out


def soft_positives(dataset, threshold: float) -> tuple[list[np.ndarray], dict]:
    """createPR's GTsoft (``evaluate --gt-soft``): the dataset's own positive rule widened to
    ``threshold`` (metres for UTM coordinates, frames for frame numbers) over its stored coordinates,
    with every hard positive kept; and its record entry."""
    from vprbench.datasets.formatted import load_coordinates
    from vprbench.datasets.groundtruth import positives_within_radius, positives_within_window
    from vprbench.errors import VPRBenchError

    coords = load_coordinates(dataset)
    if coords is None:
        raise VPRBenchError(f"--gt-soft: dataset '{dataset.name}' stores no coordinates (its ground "
                            f"truth came without them), so its positives cannot be widened")  # fmt: skip
    hard = dataset.manifest.get("threshold")
    if hard is not None and threshold < hard:
        raise VPRBenchError(f"--gt-soft {threshold:g}: below the protocol's own threshold {hard:g}")
    if coords["kind"] == "utm":
        found = positives_within_radius(coords["queries"], coords["database"], threshold)
        unit = "m"
    else:  # frame numbers, in the first column
        found = positives_within_window(
            coords["queries"][:, 0], coords["database"][:, 0], threshold
        )
        unit = "frames"
    merged = [
        np.union1d(s, h).astype(np.int64) for s, h in zip(found, dataset.positives, strict=True)
    ]
    return merged, {"threshold": threshold, "unit": unit, "pairs": int(sum(map(len, merged)))}


def record_metrics(metrics, indices, distances, dataset, queries, database, cached, evaluated,
                   ks, normalised: bool, gt_soft: float | None = None,
                   groups: dict | None = None) -> dict:  # fmt: skip
    """The robotics metrics asked for (choices.ROBOTICS_METRICS), in both conventions, for the run
    record (evaluate --metrics); ``curve_arrays`` holds VPR-Bench's curve for the predictions file.
    ``gt_soft``: VPR_Tutorial's GTsoft for the multi matching (:func:`soft_positives`); ``groups``:
    the cities of a ``--per-city`` run (the multi matrix keeps each city's pairs only)."""
    out: dict = {
        "similarity": "cosine (1 - d/2 of the squared L2 distance d of L2-normalised descriptors)"
        if normalised
        else "1 - d/2 of the squared L2 distance d of descriptors that are not unit length (PCA "
        "projections, or a model's own: the dot product for the multi-matching)",
        "curve_arrays": {},
    }
    if {"auc-pr", "r@100p"} & set(metrics):
        right, score = best_matches(indices, distances, dataset.positives)
        has_positive = np.array([p.size > 0 for p in dataset.positives], dtype=bool)
        retrieved = indices[:, 0] >= 0  # a skipped query image: VPR-Bench never scores it
        bench = vpr_bench(right[retrieved], score[retrieved])
        curve = bench.pop("curve")
        out["curve_arrays"] = {f"pr_vpr_bench_{k}": np.asarray(v) for k, v in curve.items()}
        single = vpr_tutorial_single(right, score, has_positive, retrieved=retrieved)
        soft, soft_entry = soft_positives(dataset, gt_soft) if gt_soft is not None else (None, None)
        multi = vpr_tutorial_multi(queries, database, dataset.positives, cached.database_valid,
                                      soft_positives=soft, queries_valid=cached.queries_valid,
                                      similarity="dot" if normalised else "l2",
                                      groups=groups)  # fmt: skip
        multi["gt_soft"] = soft_entry
        out["vpr-bench"] = bench | {"source": "VPR-Bench performance_comparison.py (sklearn curve)"}
        out["vpr-tutorial-single"] = single | {"source": "VPR_Tutorial createPR(matching='single')"}
        out["vpr-tutorial-multi"] = multi | {"source": "VPR_Tutorial createPR(matching='multi')"}
    if "precision" in metrics:
        out["precision@k"] = precision_at_k(indices, dataset.positives, ks, evaluated)
    if "map" in metrics:
        out["map@k"] = msls_map_at_k(indices, dataset.positives, ks, evaluated)
        out["map_source"] = "mapillary_sls utils/eval.py mapk"
    return out
