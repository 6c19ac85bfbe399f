"""Retrieval metrics: pure numpy, no I/O.

Recall@k follows the field's standard definition (VME, DVGL, gsv-cities, Patch-NetVLAD, mapillary_sls):
a query is a hit at k if any of its top-k retrieved database indices is one of its positives.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

NO_POSITIVE_POLICIES = ("miss", "exclude")


@dataclass(frozen=True)
class RecallResult:
    """Recall per k as a fraction in [0, 1], and the query counts behind it."""

    recall: dict[int, float]
    num_queries: int  # all queries of the protocol
    num_evaluated: int  # the denominator
    num_without_positives: int
    no_positive_policy: str


def first_hit_rank(predictions: np.ndarray, positives: Sequence[np.ndarray]) -> np.ndarray:
    """0-based rank of the first positive among each query's predictions, or -1 if none.

    predictions: [Nq, K] int database indices, best first; -1 marks an empty slot.
    positives: Nq arrays of positive database indices.
    Returns [Nq] int64.
    """
    predictions = np.asarray(predictions)
    assert predictions.ndim == 2, f"predictions must be [Nq, K], got {predictions.shape}"
    assert len(positives) == predictions.shape[0], "one positive list per query"
    ranks = np.full(predictions.shape[0], -1, dtype=np.int64)
    for q, (row, pos) in enumerate(zip(predictions, positives, strict=True)):
        hits = np.flatnonzero(np.isin(row, pos) & (row >= 0))
        if hits.size:
            ranks[q] = hits[0]
    return ranks


def recall_at_k(
    predictions: np.ndarray,
    positives: Sequence[np.ndarray],
    ks: Sequence[int] = (1, 5, 10, 20),
    no_positive_policy: str = "miss",
) -> RecallResult:
    """Recall@k for each k in ``ks``.

    predictions: [Nq, K] database indices ranked best first (K >= max(ks)); -1 = no result.
    positives: Nq arrays of positive database indices (may be empty).
    no_positive_policy: ``"miss"`` counts a query without positives as a miss (denominator = Nq, as
    VME/DVGL/gsv-cities do); ``"exclude"`` drops such queries from the denominator (VPR_Tutorial).
    """
    if no_positive_policy not in NO_POSITIVE_POLICIES:
        raise ValueError(f"no_positive_policy must be one of {NO_POSITIVE_POLICIES}")
    predictions = np.asarray(predictions)
    ks = sorted(set(int(k) for k in ks))
    if not ks or ks[0] < 1:
        raise ValueError(f"k values must be >= 1, got {ks}")
    if ks[-1] > predictions.shape[1]:
        raise ValueError(f"k={ks[-1]} exceeds the {predictions.shape[1]} predictions per query")
    has_positive = np.array([len(p) > 0 for p in positives], dtype=bool)
    ranks = first_hit_rank(predictions, positives)
    n = len(positives)
    denominator = n if no_positive_policy == "miss" else int(has_positive.sum())
    if denominator == 0:
        raise ValueError("no query can be evaluated: every query lacks positives")
    recall = {k: float(((ranks >= 0) & (ranks < k)).sum()) / denominator for k in ks}
    return RecallResult(
        recall=recall,
        num_queries=n,
        num_evaluated=denominator,
        num_without_positives=int((~has_positive).sum()),
        no_positive_policy=no_positive_policy,
    )
