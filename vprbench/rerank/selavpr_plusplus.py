"""SelaVPR++'s re-ranking (Lu-Feng/SelaVPRplusplus, git 56bd921; the two-branch model): the top 100
of the Hamming search over its 512-bit codes (test_rerank.py: ``faiss.IndexBinaryFlat(512)``,
``max(args.recall_values)`` = 100, parser.py) re-ordered by the L2 distance between the query's float
descriptor and each candidate's (test_rerank.py ``rerank``: ``np.linalg.norm(candidates - query,
axis=1).argsort()``, ascending, numpy's default sort)."""

from __future__ import annotations

import numpy as np

TOP_K = 100  # parser.py --recall_values 1 5 10 100: max


def float_distances(query, candidates, device: str = "cpu") -> np.ndarray:
    """[N] float32 L2 distances of candidates [N, D] to the query [D] (on the CPU, as the official)."""
    query = np.asarray(query, dtype=np.float32).reshape(-1)
    candidates = np.asarray(candidates, dtype=np.float32).reshape(len(candidates), -1)
    return np.linalg.norm(candidates - query, axis=1)


def rerank_order(scores: np.ndarray) -> np.ndarray:
    """test_rerank.py: ``argsort()`` of the distances, nearest first."""
    return np.asarray(scores).argsort()
