"""Running a re-ranker in an evaluation: its local features through the descriptor cache, then each
query's top-K re-ordered, the candidates' local features read from the cache file a query at a time
(never the database whole: SelaVPR's 61x61x128 maps are 1.9 MB an image in float32)."""

from __future__ import annotations

import time
from math import prod
from pathlib import Path

import numpy as np

from vprbench.errors import VPRBenchError
from vprbench.extract.cache import store_dtype
from vprbench.rerank import Reranker


def extract_local(dataset, settings, cache_dir: Path, reranker: Reranker, progress=None):
    """The cached local features of ``dataset`` (an ExtractResult) for ``reranker``, with the global
    extraction's settings (the same images, preprocessing and weights). A second request is answered
    from its request record, without building the model (as descriptors are)."""
    import dataclasses

    from vprbench.extract.run import extract

    if settings.model != reranker.model:
        raise VPRBenchError(
            f"--rerank {reranker.name} matches the local features of '{reranker.model}'; the model "
            f"is '{settings.model}'"
        )
    return extract(dataset, dataclasses.replace(settings, local=reranker.name), cache_dir,
                   progress=progress)  # fmt: skip


def order_candidates(reranker: Reranker, query: np.ndarray, count: int, read, device: str = "cpu",
                     options: dict | None = None) -> np.ndarray:  # fmt: skip
    """Positions of ``count`` candidates, best first, by the re-ranker: ``read(lo, hi)`` gives
    candidates lo..hi as [hi - lo, *local_shape], read and scored ``block`` at a time (never all at
    once), then ``combine``d over all of them and ordered. The one scoring path of an evaluation and
    of ``profile --rerank``."""
    raw = []
    for lo in range(0, count, reranker.block):
        candidates = read(lo, min(lo + reranker.block, count))
        raw.append(np.asarray(reranker.score(query, candidates, device=device, **(options or {}))))
    scores = np.concatenate(raw)
    scores = scores if reranker.combine is None else reranker.combine(scores)
    return np.asarray(reranker.order(scores))


def rerank_predictions(
    indices: np.ndarray,
    local,
    reranker: Reranker,
    k: int | None,
    options: dict | None = None,
    device: str = "cpu",
    rows: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Re-order each query's first ``k`` candidates of ``indices`` [Nq, K] (a search's, -1 for none)
    by the re-ranker's score on the local features ``local`` (CachedDescriptors), computed on
    ``device``; the ranks past k stay as they were. ``k`` None: the re-ranker's official number, or
    every saved candidate when the database is smaller. ``rows``: re-rank only these queries (a
    torchrun rank's share); the others stay as they were. Returns (re-ranked indices, the
    permutation applied to each row, cost with the k used)."""
    if k is None:
        k = min(reranker.top_k, indices.shape[1])
    options = {**{name: values[0] for name, values in reranker.options.items()}, **(options or {})}
    for name, value in options.items():
        if name not in reranker.options or value not in reranker.options[name]:
            allowed = {n: list(v) for n, v in reranker.options.items()}
            raise VPRBenchError(
                f"--rerank {reranker.name}: option {name}={value!r}; allowed {allowed}"
            )
    if k < 1 or k > indices.shape[1]:
        raise VPRBenchError(f"--rerank-k {k}: must be between 1 and the {indices.shape[1]} saved")
    queries, database = local.rows("queries"), local.rows("database")
    shape = reranker.local_shape
    permutation = np.tile(np.arange(indices.shape[1]), (len(indices), 1))
    start = time.perf_counter()
    rows = np.arange(len(indices)) if rows is None else np.asarray(rows)
    for q in rows:
        head = indices[q, :k]
        present = np.flatnonzero(head >= 0)
        if len(present) < 2 or not local.queries_valid[q]:
            continue
        query = np.asarray(queries[q : q + 1], dtype=np.float32).reshape(shape)

        def read(lo: int, hi: int, rows=head[present]) -> np.ndarray:
            return np.asarray(database[rows[lo:hi]], dtype=np.float32).reshape(-1, *shape)

        order = order_candidates(reranker, query, len(present), read, device, options)
        permutation[q, present] = present[order]
    seconds = time.perf_counter() - start
    itemsize = np.dtype(store_dtype(local.key)).itemsize
    cost = {
        "seconds": seconds,
        "seconds_per_query": seconds / max(1, len(rows)),
        "local_bytes_per_image": int(prod(shape) * itemsize),
        "options": options,
        "k": k,
    }
    return np.take_along_axis(indices, permutation, 1), permutation, cost


def apply_rerank(indices: np.ndarray, distances: np.ndarray, rerank: dict, device: str = "cpu",
                 group: tuple[int, int] | None = None):  # fmt: skip
    """A search's (indices, distances) re-ranked as ``rerank`` asks ({"reranker", "k", "options",
    "local"}), the distances re-ordered with them, and the record's entry for the stage.

    ``group`` (rank, world) of a torchrun run: each rank re-ranks every world-th query from its
    rank on, and the permutations are gathered to every rank (each query's re-ranking depends on it
    alone: the same result as one process). ``seconds`` is then the slowest rank's, and
    ``seconds_per_query`` the ranks' total over the queries."""
    reranker, local = rerank["reranker"], rerank["local"]
    rank, world = group or (0, 1)
    mine = np.arange(rank, len(indices), world)
    _, permutation, cost = rerank_predictions(indices, local, reranker, rerank.get("k"),
                                              rerank.get("options"), device, rows=mine)  # fmt: skip
    if world > 1:
        import torch.distributed as dist

        parts = [None] * world
        dist.all_gather_object(parts, (mine, permutation[mine], cost["seconds"]))
        for rows, part, _ in parts:
            permutation[rows] = part
        spent = [seconds for _, _, seconds in parts]
        cost.update(seconds=max(spent), seconds_per_query=sum(spent) / max(1, len(indices)),
                    ranks=world)  # fmt: skip
    indices = np.take_along_axis(indices, permutation, 1)
    distances = np.take_along_axis(distances, permutation, 1)  # the global distances, re-ordered
    entry = {"name": reranker.name, "source": reranker.source,
             "local_descriptors": str(local.path), **cost}  # fmt: skip
    if reranker.libraries:
        import importlib

        entry["libraries"] = {name: importlib.import_module(name).__version__
                              for name in reranker.libraries}  # fmt: skip
    return indices, distances, entry
