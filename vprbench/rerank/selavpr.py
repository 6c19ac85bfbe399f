"""SelaVPR's re-ranking (Lu-Feng/SelaVPR, git cf6e206): the global top-100 (parser.py ``--rerank_num``)
re-ordered by the number of mutual nearest neighbours between the query's dense local features and
each candidate's (local_matching.py ``match_batch_tensor``, ``local_sim``; test.py ``rerank``).

The local features are network.py's ``local_feature``: a 61 x 61 map of 128-d vectors, each
L2-normalised (models.selavpr ``SelaVPR.local_features``). For a query's l = 3,721 features and a
candidate's: M = candidate @ query^T; query feature j's nearest candidate feature is argmax over the
candidate's (first index on ties, as torch.argmax); it is a mutual match when that candidate feature's
nearest query feature is j again. The score is the number of mutual matches; the candidates are
re-ordered by ``np.argsort(scores)[::-1]``, the official call. numpy's default sort is not stable
(and SIMD on some CPUs), so the order of candidates with equal counts depends on the numpy build and
the CPU, here as in the official run.

One oddity of the official code, matched by default: ``torch.nonzero(valid).squeeze()`` makes a
single mutual match a 0-d tensor, which ``len(idx1.shape) < 1`` scores 0 instead of 1
(``one_match="official"``); ``one_match="count"`` scores it 1.
"""

from __future__ import annotations

import numpy as np

ONE_MATCH = ("official", "count")
LOCAL_SHAPE = (61, 61, 128)  # parser.py --dense_feature_map_size
TOP_K = 100  # parser.py --rerank_num


CANDIDATES_PER_MATMUL = 8  # (8, 3721, 3721) float32 similarities: 443 MB (the official: all 100)


def mutual_matches(query, candidates, one_match: str = "official", device: str = "cpu",
                   threshold: float | None = None):  # fmt: skip
    """Scores [N] (float32, as the official ``torch.zeros(...).cuda()``) of candidates [N, ..., C]
    against the query's local features [..., C] (arrays), on ``device`` (the official code runs it
    on CUDA), a few candidates at a time: each candidate's score depends on it alone.

    ``threshold`` (FoL's ``T2``): count only the mutual matches whose cosine, computed as the official
    ``torch.sum(fm1[idx1] * fm2[i][idx2], dim=1)``, exceeds it; a single mutual match still scores 0
    (``one_match="official"``: the 0-d index skips the threshold and scores 0), or is counted like
    the others (``"count"``)."""
    import torch

    if one_match not in ONE_MATCH:
        raise ValueError(f"one_match must be one of {ONE_MATCH}, got {one_match!r}")
    dev = torch.device(device)
    query = torch.as_tensor(np.asarray(query, dtype=np.float32)).to(dev)
    candidates = np.asarray(candidates, dtype=np.float32)
    n, c = len(candidates), candidates.shape[-1]
    q = query.reshape(-1, c)
    length = len(q)
    scores = torch.zeros(n, dtype=torch.float32)
    for lo in range(0, n, CANDIDATES_PER_MATMUL):
        cand = torch.as_tensor(candidates[lo : lo + CANDIDATES_PER_MATMUL]).to(dev)
        cand = cand.reshape(len(cand), length, c)
        m = torch.matmul(cand, q.T)  # (n, l_candidate, l_query)
        best_candidate = torch.argmax(m, dim=1)  # (n, l_query): each query feature's nearest
        best_query = torch.argmax(m, dim=2)  # (n, l_candidate)
        rows = torch.arange(len(cand), device=dev).reshape(-1, 1)
        valid = (
            torch.arange(length, device=dev).repeat(len(cand), 1)
            == best_query[rows, best_candidate]
        )
        mutual = valid.sum(dim=1).cpu()
        counted = valid
        if threshold is not None:  # the cosine of each query feature with its nearest
            cosine = torch.sum(q[None] * cand[rows, best_candidate], dim=-1)
            counted = valid & (cosine > threshold)
        part = counted.sum(dim=1).cpu().to(torch.float32)
        if one_match == "official":
            part[mutual == 1] = 0.0
        scores[lo : lo + len(cand)] = part
    return scores.numpy()


def rerank_order(scores: np.ndarray) -> np.ndarray:
    """test.py ``rerank``: positions of the candidates, best first: ``argsort()[::-1]``."""
    return np.asarray(scores).argsort()[::-1]
