"""The cost of a re-ranking stage (``profile MODEL --rerank NAME``): the local features' forward, their
bytes per image, and the matching of one query against its top-K, timed on near-duplicate candidates
(the query's own local features with noise), the case in which the matchers do the most work (RANSAC
gets many mutual matches). The candidates are in memory: reading them from the cache is not timed."""

from __future__ import annotations

import time
from math import ceil, prod

import numpy as np
import torch

from vprbench.errors import VPRBenchError
from vprbench.extract.cache import STORE_DTYPES
from vprbench.profile.timing import measure_latency
from vprbench.rerank import Reranker
from vprbench.rerank.local import LocalFeatures

NOISE = 0.1  # per element, before each local feature is normalised again


def near_duplicates(query: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """[n, *query.shape]: the query's local features plus N(0, NOISE^2) noise, unit length along the
    last axis (as the local features are)."""
    rng = np.random.default_rng(seed)
    out = query[None] + NOISE * rng.standard_normal((n, *query.shape), dtype=np.float32)
    return out / np.linalg.norm(out, axis=-1, keepdims=True)


def time_matching(reranker: Reranker, query: np.ndarray, k: int, device: str, repeats: int) -> dict:
    """Seconds to score and order ``k`` candidates for one query, as evaluate's re-ranking does it
    (``block`` candidates a score call), after one warm-up query."""
    from vprbench.evaluate.rerank import order_candidates

    block = near_duplicates(query, min(reranker.block, k))
    times = []
    for i in range(1 + repeats):
        start = time.perf_counter()
        order_candidates(reranker, query, k, lambda lo, hi: block[: hi - lo], device)
        if i:
            times.append(time.perf_counter() - start)
    q1, median, q3 = np.percentile(times, [25, 50, 75])
    return {"query_s_median": median, "query_s_p25": q1, "query_s_p75": q3, "repeats": repeats,
            "warmup": 1, "score_calls": ceil(k / reranker.block)}  # fmt: skip


def profile_rerank(model, reranker: Reranker, x: torch.Tensor, k: int | None, settings) -> dict:
    """The record's ``rerank`` entry for ``model`` (built, on the device of ``x``)."""
    if k is None:
        k = reranker.top_k
    if k < 1:
        raise VPRBenchError(f"--rerank-k {k}: must be at least 1")
    local = LocalFeatures(model, reranker).eval()
    with torch.inference_mode():
        query = local(x[:1]).float().cpu().numpy()[0]
    if query.size != prod(reranker.local_shape):
        raise VPRBenchError(
            f"--rerank {reranker.name}: the local features of a {tuple(x.shape[-2:])} image have "
            f"{query.size:,} values; the re-ranker matches {reranker.local_shape} "
            f"({prod(reranker.local_shape):,}): profile at the image size it expects"
        )
    query = query.reshape(reranker.local_shape)
    latency = measure_latency(local, x, settings.dtype, settings.warmup, settings.repeats)
    matching = time_matching(reranker, query, k, settings.device, settings.rerank_repeats)
    values = prod(reranker.local_shape)
    return {
        "name": reranker.name,
        "source": reranker.source,
        "k": k,
        "local_shape": list(reranker.local_shape),
        "local_bytes_per_image": {
            store: values * np.dtype(dtype).itemsize for store, dtype in STORE_DTYPES.items()
        },  # fmt: skip
        "local_features": {**latency, "excludes": "data loading and decoding"},
        "matching": {
            **matching,
            "candidates": f"near duplicates of the query (noise {NOISE}), "
            "in memory: the cache reads are not timed",
        },  # fmt: skip
        "query_s": latency["image_ms_median"] / 1000 + matching["query_s_median"],
    }
