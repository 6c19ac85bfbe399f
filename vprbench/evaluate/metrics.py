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
# VPR queries are not independent: Nordland and MSLS queries come in sequences, a Pittsburgh place is
# 24 views of one panorama. An interval or test that treats them as independent is too narrow where
# hits are correlated (on nordland-sample the lag-1 autocorrelation of hits is 0.27-0.48). So each
# protocol names how its queries are resampled (datasets.yaml ``cluster``), :class:`Resampling`:
#   iid       independent queries: recall's interval is the exact Binomial (Clopper-Pearson); the
#             paired difference gets Tango's score interval, the test is McNemar's exact test
#   place     clusters (views of one place, one MSLS sequence): the cluster bootstrap (resample whole
#   sequence  clusters with replacement; recall = their hits over their queries), and the paired test is
#             the exact sign-flip test on each cluster's discordant difference
#   blocks    one sequence in query order: the circular moving-block bootstrap (Künsch 1989; Politis and
#             Romano 1992) with blocks of a stated length, and the sign-flip test on consecutive blocks
# With one query per cluster the sign-flip test is McNemar's exact test (tests/test_intervals.py).

BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0
LEVEL = 0.95
RESAMPLING_RULES = ("iid", "place", "sequence", "blocks")
# at most this many cluster weights in memory at once (int64): 32 MiB, resamples drawn in batches
_WEIGHTS_PER_BATCH = 1 << 22


@dataclass(frozen=True)
class Resampling:
    """How the evaluated queries are resampled. ``clusters``: [N] int cluster id of each evaluated
    query (rules place and sequence); ``length``: the block length (rule blocks, queries in order)."""

    rule: str = "iid"
    clusters: np.ndarray | None = None
    length: int | None = None
    # Below this many clusters the percentile cluster bootstrap undercovers (about 88% at 8 and 92% at
    # 15 clusters in a simulation of unequal clusters; the sign-flip test keeps its size): a warning.
    FEW_UNITS = 30

    def __post_init__(self):
        if self.rule not in RESAMPLING_RULES:
            raise ValueError(
                f"resampling rule must be one of {RESAMPLING_RULES}, got {self.rule!r}"
            )
        if self.rule in ("place", "sequence") and self.clusters is None:
            raise ValueError(f"resampling rule {self.rule!r} needs a cluster id per query")
        if self.rule == "blocks" and (self.length is None or self.length < 1):
            raise ValueError(
                f"resampling rule 'blocks' needs a block length >= 1, got {self.length}"
            )

    def groups(self, n: int) -> np.ndarray:
        """[n] int: the group of each query for the cluster sums (blocks: consecutive, non-overlapping
        blocks of ``length``; iid: every query its own)."""
        if self.rule in ("place", "sequence"):
            clusters = np.asarray(self.clusters)
            if clusters.shape != (n,):
                raise ValueError(f"{clusters.shape[0]} cluster ids for {n} queries")
            return np.unique(clusters, return_inverse=True)[1].reshape(-1)
        if self.rule == "blocks":
            return np.arange(n) // self.length
        return np.arange(n)

    def units(self, n: int) -> int:
        """How many independent units ``n`` queries make: clusters, blocks (ceil(n / length)), or n."""
        return int(self.groups(n).max()) + 1

    def describe(self, n: int | None = None) -> str:
        """In words, for a table caption or the terminal."""
        if self.rule == "iid":
            return "independent queries"
        if self.rule == "blocks":
            return f"moving blocks of {self.length} consecutive queries"
        count = "" if n is None else f" ({int(self.groups(n).max()) + 1} clusters)"
        what = "views of one place" if self.rule == "place" else "queries of one sequence"
        return f"clusters of {what}{count}"

    def method(self) -> dict:
        """The interval and test methods under this rule, for a record."""
        if self.rule == "iid":
            return {
                "interval": "exact Binomial (Clopper-Pearson)",
                "paired_interval": "Tango's score interval for paired proportions",
                "test": "McNemar's exact test",
            }
        boot = (
            f"circular moving-block bootstrap, blocks of {self.length}"
            if self.rule == "blocks"
            else "cluster bootstrap (whole clusters resampled with replacement)"
        )
        units = f"consecutive blocks of {self.length}" if self.rule == "blocks" else "clusters"
        units_of = "blocks" if self.rule == "blocks" else "clusters"
        return {
            "interval": f"percentile {boot} (where every {units_of[:-1]} is alike, Clopper-Pearson "
            f"over the number of {units_of})",
            "paired_interval": f"percentile {boot}, of the paired difference (with no discordant "
            f"query, Tango's interval over the number of {units_of})",
            "test": f"exact sign-flip test on the discordant difference of {units}",
            "resamples": BOOTSTRAP_RESAMPLES,
            "seed": BOOTSTRAP_SEED,
        }


IID = Resampling()


def hits_at_k(ranks: np.ndarray, k: int) -> np.ndarray:
    """[Nq] bool: the first positive is within the top k (``ranks`` from :func:`first_hit_rank`)."""
    ranks = np.asarray(ranks)
    return (ranks >= 0) & (ranks < k)


def clopper_pearson(successes: int, n: int, level: float = LEVEL) -> tuple[float, float]:
    """Exact Binomial interval of a proportion: the ends are the Beta quantiles that make each tail
    of Binomial(n, p) equal (1 - level) / 2. Never zero-width; 0 and 1 are reached only at 0 / n."""
    from scipy.stats import beta

    tail = (1 - level) / 2
    low = 0.0 if successes == 0 else float(beta.ppf(tail, successes, n - successes + 1))
    high = 1.0 if successes == n else float(beta.ppf(1 - tail, successes + 1, n - successes))
    return low, high


def _bootstrap_means(values: np.ndarray, resampling: Resampling, sizes: bool) -> np.ndarray:
    """[resamples] bootstrap replicates of mean(values) under ``resampling`` (not iid). ``sizes``:
    divide by the resampled number of queries (cluster bootstrap: a ratio), else by N."""
    values = np.asarray(values, dtype=np.float64)
    n = values.size
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    if resampling.rule == "blocks":
        length = min(resampling.length, n)
        blocks = -(-n // length)  # blocks per replicate, the last one cut to reach n queries
        # circular block sums: start s covers s .. s+length-1 (mod n); the cut block covers fewer
        wrapped = np.concatenate([values, values[:length]])
        cumulative = np.concatenate([[0.0], np.cumsum(wrapped)])
        full = cumulative[length : length + n] - cumulative[:n]
        rest = n - (blocks - 1) * length
        last = cumulative[rest : rest + n] - cumulative[:n]
        out = np.empty(BOOTSTRAP_RESAMPLES)
        batch = max(1, _WEIGHTS_PER_BATCH // blocks)
        for i in range(0, BOOTSTRAP_RESAMPLES, batch):
            m = min(batch, BOOTSTRAP_RESAMPLES - i)
            starts = rng.integers(0, n, size=(m, blocks))
            out[i : i + m] = (full[starts[:, :-1]].sum(axis=1) + last[starts[:, -1]]) / n
        return out
    groups = resampling.groups(n)
    totals = np.bincount(groups, weights=values)
    counts = np.bincount(groups).astype(np.float64)
    c = totals.size
    out = np.empty(BOOTSTRAP_RESAMPLES)
    batch = max(1, _WEIGHTS_PER_BATCH // c)
    for i in range(0, BOOTSTRAP_RESAMPLES, batch):
        m = min(batch, BOOTSTRAP_RESAMPLES - i)
        weights = rng.multinomial(c, np.full(c, 1.0 / c), size=m)
        out[i : i + m] = (weights @ totals) / (weights @ counts if sizes else n)
    return out


def _percentiles(draws: np.ndarray, level: float) -> tuple[float, float]:
    tail = (1 - level) / 2
    return float(np.quantile(draws, tail)), float(np.quantile(draws, 1 - tail))


def recall_interval(
    hits: np.ndarray, resampling: Resampling = IID, level: float = LEVEL
) -> tuple[float, float]:
    """Interval of the recall (fraction of ``hits``, [N] bool in query order) under ``resampling``:
    Clopper-Pearson for independent queries, else the percentile cluster or block bootstrap."""
    hits = np.asarray(hits, dtype=bool)
    assert hits.ndim == 1 and hits.size > 0, "hits must be a non-empty [N] vector"
    if resampling.rule == "iid":
        return clopper_pearson(int(hits.sum()), hits.size, level)
    if hits.all() or not hits.any():
        # every resample is alike, so the bootstrap says [p, p]: certainty it does not have. Each
        # cluster (block) counted as one observation instead: no hit in C clusters, [0, CP(0, C)].
        c = resampling.units(hits.size)
        return clopper_pearson(c if hits.all() else 0, c, level)
    return _percentiles(_bootstrap_means(hits, resampling, sizes=True), level)


def tango_interval(only_a: int, only_b: int, n: int, level: float = LEVEL) -> tuple[float, float]:
    """Tango's (1998) score interval for the difference of two paired proportions, (only_a - only_b)/n:
    every difference d whose score statistic, with the other cells at their maximum-likelihood values
    under d, stays within the normal quantile. Never zero-width (0 discordant of 600 gives about
    +/-0.64 points), and at d = 0 the statistic is McNemar's (only_a - only_b) / sqrt(only_a + only_b)."""
    from scipy.optimize import brentq
    from scipy.stats import norm

    z = float(norm.ppf(1 - (1 - level) / 2))
    b, c = float(only_a), float(only_b)

    def score(d: float) -> float:
        # the restricted MLE of P(only B) given difference d: root of
        # 2n p^2 + (-(b + c) + (2n - b + c) d) p - c d (1 - d) = 0
        w = -(b + c) + (2 * n - b + c) * d
        p = (-w + np.sqrt(max(w * w + 8 * n * c * d * (1 - d), 0.0))) / (4 * n)
        variance = n * (2 * p + d * (1 - d))
        return (b - c - n * d) / np.sqrt(max(variance, 1e-300))

    estimate = (b - c) / n
    edge = 1 - 1e-12
    low = -1.0 if score(-edge) <= z else brentq(lambda d: score(d) - z, -edge, estimate)
    high = 1.0 if score(edge) >= -z else brentq(lambda d: score(d) + z, estimate, edge)
    return float(low), float(high)


def sign_flip_pvalue(differences: np.ndarray) -> float:
    """Two-sided exact p of the sign-flip (randomisation) test: under the null each cluster's
    difference (its queries only A finds minus those only B finds) is as likely negated, so the sum's
    null distribution is that of sum(+/-|d_c|), computed exactly by convolution. One query per
    cluster gives McNemar's exact test."""
    from scipy.signal import convolve
    from scipy.stats import binom

    d = np.abs(np.asarray(differences, dtype=np.int64))
    observed = abs(int(np.asarray(differences, dtype=np.int64).sum()))
    d = d[d > 0]
    if d.size == 0:
        return 1.0
    pmf = np.array([1.0])  # over sums -total..total; entry j is the sum -total_so_far + j
    for value, count in zip(*np.unique(d, return_counts=True), strict=True):
        kernel = np.zeros(2 * value * count + 1)
        kernel[:: 2 * value] = binom.pmf(np.arange(count + 1), count, 0.5)
        pmf = np.clip(convolve(pmf, kernel), 0.0, None)
    total = (pmf.size - 1) // 2
    sums = np.abs(np.arange(-total, total + 1))
    return float(min(1.0, pmf[sums >= observed].sum()))


@dataclass(frozen=True)
class PairedComparison:
    """Recall of A minus recall of B on the same queries, its interval and the paired test's p."""

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
    resampling: Resampling = IID,
    level: float = LEVEL,
) -> PairedComparison:
    """A against B on the same queries (hits: [N] bool each, query i the same query in both, in query
    order), with the interval and test of ``resampling``."""
    a, b = np.asarray(hits_a, dtype=bool), np.asarray(hits_b, dtype=bool)
    assert a.shape == b.shape and a.ndim == 1 and a.size > 0, "paired hit vectors of one length"
    n = a.size
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    if resampling.rule == "iid":
        low, high = tango_interval(only_a, only_b, n, level)
        p = mcnemar_exact(only_a, only_b)
    else:
        diff = a.astype(np.int64) - b.astype(np.int64)
        if only_a == only_b == 0:  # as above: no discordant cluster, Tango's over the clusters
            low, high = tango_interval(0, 0, resampling.units(n), level)
        else:
            low, high = _percentiles(_bootstrap_means(diff, resampling, sizes=True), level)
        p = sign_flip_pvalue(np.bincount(resampling.groups(n), weights=diff).astype(np.int64))
    return PairedComparison(
        k=k,
        recall_a=float(a.mean()),
        recall_b=float(b.mean()),
        difference=float(a.mean() - b.mean()),
        low=low,
        high=high,
        only_a=only_a,
        only_b=only_b,
        p_value=p,
    )


def parse_ks(text: str) -> list[int]:
    """``"1,5,10"`` -> [1, 5, 10]; raises ValueError with the offending part."""
    ks = []
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit() or int(part) < 1:
            raise ValueError(f"--k expects positive integers separated by commas, got {part!r}")
        ks.append(int(part))
    return sorted(set(ks))
