"""Retrieval metrics: pure numpy, no I/O.

Recall@k follows the field's standard definition (VME, DVGL, gsv-cities, Patch-NetVLAD, mapillary_sls):
a query is a hit at k if any of its top-k retrieved database indices is one of its positives.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from vprbench.choices import NO_POSITIVE_POLICIES  # noqa: F401  (re-exported)


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


# --- uncertainty --------------------------------------------------------------------------------
# Resampling queries with replacement, the number of hits in a resample of N queries is exactly
# Binomial(N, observed recall), and for two methods on the same queries the counts of (both, only A,
# only B, neither) are exactly Multinomial(N, observed shares). Drawing those is the bootstrap over
# queries, without building N x resamples index arrays (27,592 x 1,000 for Nordland**).

BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0


def hits_at_k(ranks: np.ndarray, k: int) -> np.ndarray:
    """[Nq] bool: the first positive is within the top k (``ranks`` from :func:`first_hit_rank`)."""
    ranks = np.asarray(ranks)
    return (ranks >= 0) & (ranks < k)


def bootstrap_interval(
    hits: np.ndarray,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap interval of the recall (fraction of ``hits``) over queries.

    hits: [N] bool, one per evaluated query. Returns (low, high) as fractions."""
    hits = np.asarray(hits, dtype=bool)
    assert hits.ndim == 1 and hits.size > 0, "hits must be a non-empty [N] vector"
    rng = np.random.default_rng(seed)
    draws = rng.binomial(hits.size, hits.mean(), size=resamples) / hits.size
    tail = (1 - level) / 2
    return float(np.quantile(draws, tail)), float(np.quantile(draws, 1 - tail))


@dataclass(frozen=True)
class PairedComparison:
    """Recall of A minus recall of B on the same queries, its interval and McNemar's exact p."""

    k: int
    recall_a: float
    recall_b: float
    difference: float
    low: float
    high: float
    only_a: int  # queries A finds and B misses
    only_b: int
    p_value: float

    @property
    def significant(self) -> bool:
        return self.p_value < 0.05


def holm(p_values: list[float]) -> list[float]:
    """Holm(-Bonferroni) adjusted p-values, in the order given: the i-th smallest of m is multiplied
    by m - i + 1, then made non-decreasing in that order and capped at 1. Rejecting where the adjusted
    p < alpha keeps the family-wise error rate at alpha for any dependence between the tests."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted, running = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def mcnemar_exact(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar test: the discordant queries split as Binomial(n, 1/2) under the null."""
    from scipy.stats import binomtest

    n = only_a + only_b
    return 1.0 if n == 0 else float(binomtest(only_a, n, 0.5).pvalue)


def paired_comparison(
    hits_a: np.ndarray,
    hits_b: np.ndarray,
    k: int,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    level: float = 0.95,
) -> PairedComparison:
    """A against B on the same queries (hits: [N] bool each, query i the same query in both)."""
    a, b = np.asarray(hits_a, dtype=bool), np.asarray(hits_b, dtype=bool)
    assert a.shape == b.shape and a.ndim == 1 and a.size > 0, "paired hit vectors of one length"
    n = a.size
    counts = np.array([(a & b).sum(), (a & ~b).sum(), (~a & b).sum(), (~a & ~b).sum()])
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(n, counts / n, size=resamples)
    diffs = (draws[:, 1] - draws[:, 2]) / n
    tail = (1 - level) / 2
    return PairedComparison(
        k=k,
        recall_a=float(a.mean()),
        recall_b=float(b.mean()),
        difference=float(a.mean() - b.mean()),
        low=float(np.quantile(diffs, tail)),
        high=float(np.quantile(diffs, 1 - tail)),
        only_a=int(counts[1]),
        only_b=int(counts[2]),
        p_value=mcnemar_exact(int(counts[1]), int(counts[2])),
    )
