"""Nearest-neighbour search over L2-normalised descriptors, by squared L2 distance (the ranking of
cosine similarity).

- ``exact`` (the default, and every official evaluation): the database is searched in chunks of rows
  with a running top-k (the torch path also in blocks of queries), so memory beyond the descriptors
  themselves stays at one chunk and one block of distances (a 100,000 x
  10,752 database is 4.3 GB; a faiss index of it all would copy it). Each chunk goes through a torch
  matmul and top-k on the device (CUDA, or the CPU for large searches: default_backend), or faiss
  IndexFlatL2 (small searches on the CPU). Both order exact ties by database index, lowest first, as
  faiss does; other neighbours can differ where distances differ by float rounding (the matmul's
  order of additions), which is why a run on another device keeps its own record.
- ``hnsw``, ``ivf-flat``, ``ivf-pq``: approximate faiss indexes, opt-in. ``evaluate`` records their
  parameters and the recall they lose against exact search.
"""

from __future__ import annotations

import math
import time

import faiss
import numpy as np

from vprbench.choices import SEARCHES

# HNSW: M=32 and faiss' defaults efConstruction=40, efSearch=16. faiss searches with
# max(efSearch, k) candidates (impl/HNSW.cpp), so the efSearch recorded and run is max(16, k), and
# evaluate searches an approximate index for the largest k it reports, not the saved top-100 (which
# would make every HNSW search one of 100 candidates). The graph is built on one thread, so that two
# runs build the same graph.
HNSW = {"M": 32, "efConstruction": 40, "efSearch": 16}
# IVF: about 4 sqrt(N) lists (faiss' guideline: 4-16 sqrt(N)) but at least 39 training points per
# list (below that faiss warns that k-means is unreliable), 16 probed; PQ with 8-bit codes in at most
# 64 sub-quantisers (a divisor of the dimension). k-means is seeded (faiss' default 1234).
IVF = {"lists_per_sqrt_n": 4, "nprobe": 16, "pq_bits": 8, "pq_max_subquantizers": 64}
CHUNK_BYTES = 1 << 30  # database rows per chunk of exact search: about 1 GiB of float32
# IVF indexes train on at most this much of the database (float32), but on at least 39 rows per list
# (faiss' floor), a seeded sample of rows; the rest is added in chunks: the database is never read
# whole (at SF-XL's 2.8 M x 8,448 it is 95 GB in float32). faiss itself samples k-means training
# to 256 rows per list, so below the cap nothing changes.
TRAIN_BYTES = 4 << 30
TRAIN_SEED = 1234
DISTANCE_BYTES = 1 << 28  # queries per block of the torch path: 256 MiB of distances to one chunk


def _as_float32(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=np.float32)


def _merge(best_d, best_i, d, i, k):
    """Running top-k: keep the k smallest of the current best and a chunk's results (ties keep the
    earlier, i.e. lower-indexed, rows first)."""
    if best_d is None:
        return d[:, :k], i[:, :k]
    dist = np.concatenate([best_d, d], axis=1)
    idx = np.concatenate([best_i, i], axis=1)
    order = np.argsort(dist, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(dist, order, 1), np.take_along_axis(idx, order, 1)


def _flat_chunks(database, queries, k, keep, chunk_rows):
    """Exact top-k through faiss, one chunk of the valid rows at a time."""
    best_d = best_i = None
    for start in range(0, len(keep), chunk_rows):
        rows = keep[start : start + chunk_rows]
        index = faiss.IndexFlatL2(database.shape[1])
        index.add(_as_float32(database[rows]))
        d, local = index.search(queries, min(k, len(rows)))
        best_d, best_i = _merge(best_d, best_i, d, rows[local], k)
    return best_d, best_i


def _torch_chunks(database, queries, k, keep, chunk_rows, device, plan_rows=None):
    """Exact top-k by ||q||^2 + ||x||^2 - 2 q.x in float32 on ``device``, one chunk of database rows
    at a time, for blocks of queries whose distances to a chunk fit DISTANCE_BYTES: the memory beyond
    the descriptors is one chunk and one block of distances, whatever the number of queries (was
    three query x chunk matrices: 8.5 GiB for Nordland**'s 27,592 queries)."""
    import torch

    dev = torch.device(device)
    out_d, out_i = [], []
    widest = min(chunk_rows, max(1, len(keep) if plan_rows is None else plan_rows))
    block = max(1, DISTANCE_BYTES // (4 * widest))
    for q_start in range(0, len(queries), block):
        q = torch.from_numpy(queries[q_start : q_start + block]).to(dev)
        q_norm = (q * q).sum(1, keepdim=True)
        best_d = best_i = None
        for start in range(0, len(keep), chunk_rows):
            rows = keep[start : start + chunk_rows]
            x = torch.from_numpy(_as_float32(database[rows])).to(dev, non_blocking=True)
            dist = q_norm + (x * x).sum(1)[None, :]  # the one block of distances, filled in place
            dist.addmm_(q, x.T, alpha=-2.0).clamp_min_(0)
            d, local = _lowest_index_topk(dist, min(k, len(rows)))
            del dist
            local = local.cpu().numpy()
            best_d, best_i = _merge(best_d, best_i, d.cpu().numpy(), rows[local], k)
        out_d.append(best_d)
        out_i.append(best_i)
    return np.concatenate(out_d), np.concatenate(out_i)


def _lowest_index_topk(dist, k: int):
    """The k smallest of each row of ``dist`` [Nq, N], exact ties in ascending column order, as faiss'
    flat index orders them (``torch.topk`` orders ties arbitrarily, differently on CUDA and CPU). A
    row whose k-th value ties with values topk left out is sorted whole (stable); that needs exactly
    equal distances (duplicate images or descriptors), so it is rare."""
    import torch

    d, local = torch.topk(dist, k, dim=1, largest=False, sorted=True)
    kth = d[:, -1:]
    ambiguous = torch.nonzero((dist == kth).sum(1) > (d == kth).sum(1)).flatten()
    if len(ambiguous):
        full_d, full_i = torch.sort(dist[ambiguous], dim=1, stable=True)
        d[ambiguous], local[ambiguous] = full_d[:, :k], full_i[:, :k]
    # within the k kept: by distance, then by column
    by_column = torch.argsort(local, dim=1)
    d, local = torch.gather(d, 1, by_column), torch.gather(local, 1, by_column)
    order = torch.sort(d, dim=1, stable=True).indices
    return torch.gather(d, 1, order), torch.gather(local, 1, order)


# Above this many multiply-adds, exact search on the CPU goes through torch: its matmul ran 3.9x faster
# than faiss-cpu's flat search (benchmarks/search_memory.py: 100,000 x 10,752, 1,000 queries: 13.6 s
# vs 53.7 s, the same neighbours), which pays for importing torch (about a second). Below it, faiss.
TORCH_ABOVE_MACS = 2e10


def default_backend(n_queries: int, n_database: int, dim: int, device: str = "cpu") -> str:
    """torch on CUDA, and on the CPU for large searches; faiss for small ones."""
    if str(device).startswith("cuda") or n_queries * n_database * dim > TORCH_ABOVE_MACS:
        return "torch"
    return "faiss"


def _pq_subquantizers(dim: int) -> int:
    for m in range(min(IVF["pq_max_subquantizers"], dim), 0, -1):
        if dim % m == 0:
            return m
    return 1


def approximate_params(kind: str, n: int, dim: int, k: int = 1) -> dict:
    """The index parameters used for ``kind`` on ``n`` database rows of ``dim`` dimensions, searched
    for ``k`` neighbours (HNSW's efSearch: what faiss runs, max(16, k))."""
    if kind == "hnsw":
        return dict(HNSW, efSearch=max(HNSW["efSearch"], k), build_threads=1)
    nlist = max(1, min(int(round(IVF["lists_per_sqrt_n"] * math.sqrt(n))), n // 39))
    params = {"nlist": nlist, "nprobe": min(IVF["nprobe"], nlist)}
    if kind == "ivf-pq":
        params |= {"m": _pq_subquantizers(dim), "nbits": IVF["pq_bits"]}
    train = min(n, max(39 * nlist, TRAIN_BYTES // (4 * max(1, dim))))
    if train < n:  # recorded only when the index trained on a sample
        params |= {"train_rows": train, "train_seed": TRAIN_SEED}
    return params


def _approximate(database, queries, k, keep, kind, timings=None):
    began = time.perf_counter()
    dim = database.shape[1]
    params = approximate_params(kind, len(keep), dim, k)
    if kind == "hnsw":
        rows = _as_float32(database[keep])
        index = faiss.IndexHNSWFlat(dim, HNSW["M"])
        index.hnsw.efConstruction = HNSW["efConstruction"]
        threads = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)
        try:
            index.add(rows)
        finally:
            faiss.omp_set_num_threads(threads)
        index.hnsw.efSearch = params["efSearch"]
    else:
        needed = 39 if kind == "ivf-flat" else 2 ** IVF["pq_bits"]
        if len(keep) < needed:
            raise ValueError(
                f"search {kind} trains on the database: it needs at least {needed} database images, "
                f"got {len(keep)}"
            )
        quantizer = faiss.IndexFlatL2(dim)
        if kind == "ivf-flat":
            index = faiss.IndexIVFFlat(quantizer, dim, params["nlist"])
        else:
            index = faiss.IndexIVFPQ(quantizer, dim, params["nlist"], params["m"], params["nbits"])
        if "train_rows" in params:  # the rest is read again, a chunk at a time, to be added
            rng = np.random.default_rng(params["train_seed"])
            sample = np.sort(rng.choice(len(keep), params["train_rows"], replace=False))
            index.train(_as_float32(database[keep[sample]]))
            rows_of = lambda part: _as_float32(database[keep[part]])  # noqa: E731
        else:  # trained on every row: added from the same array, not read twice
            rows = _as_float32(database[keep])
            index.train(rows)
            rows_of = rows.__getitem__
        chunk = max(1, CHUNK_BYTES // (4 * dim))
        for start in range(0, len(keep), chunk):  # added in order: the same index as one add
            index.add(rows_of(slice(start, start + chunk)))
        index.nprobe = params["nprobe"]
    built = time.perf_counter()
    d, local = index.search(queries, k)
    if timings is not None:  # build (training and adding the database) and search, apart
        timings.update(build_seconds=built - began, search_seconds=time.perf_counter() - built)
    idx = np.where(local >= 0, keep[np.clip(local, 0, None)], -1)
    return np.where(local >= 0, d, np.inf), idx


def exact_search(
    database: np.ndarray,
    queries: np.ndarray,
    k: int,
    database_valid: np.ndarray | None = None,
    kind: str = "exact",
    device: str = "cpu",
    backend: str | None = None,
    chunk_rows: int | None = None,
    plan_rows: int | None = None,
    timings: dict | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k database indices for each query, by squared L2 distance.

    database: [Nd, D] and queries: [Nq, D] float32, L2-normalised (same ranking as cosine); the
    database may be any array that supports row indexing (an h5py dataset, a memory map).
    database_valid: optional [Nd] bool; invalid rows (images skipped at extraction) are never returned.
    kind: ``exact`` or an approximate index (SEARCHES). backend: ``faiss`` or ``torch`` for exact
    search (default: :func:`default_backend`, torch on CUDA and for large CPU searches, faiss for
    small ones). chunk_rows: database rows per chunk. plan_rows: the valid rows the blocks of
    queries are sized for (default: this search's; a shard passes the whole search's). timings: a
    dict an approximate search fills with its ``build_seconds`` and ``search_seconds``.
    Returns (indices [Nq, k] int64, squared L2 distances [Nq, k] float32); slots beyond the number of
    valid database rows hold -1 and +inf.
    """
    if kind not in SEARCHES:
        raise ValueError(f"search must be one of {SEARCHES}, got {kind!r}")
    queries = _as_float32(queries)
    assert (
        queries.ndim == 2 and len(database.shape) == 2 and database.shape[1] == queries.shape[1]
    ), f"descriptor shapes differ: database {database.shape}, queries {queries.shape}"
    n = database.shape[0]
    keep = np.arange(n) if database_valid is None else np.flatnonzero(database_valid)
    if len(keep) == 0 or len(queries) == 0:
        distances, indices = np.empty((len(queries), 0), np.float32), np.empty((len(queries), 0))
    elif kind != "exact":
        distances, indices = _approximate(database, queries, k, keep, kind, timings)
    else:
        chunk = chunk_rows or max(1, CHUNK_BYTES // (4 * database.shape[1]))
        backend = backend or default_backend(len(queries), len(keep), queries.shape[1], device)
        if backend == "torch":
            distances, indices = _torch_chunks(database, queries, k, keep, chunk, device, plan_rows)
        elif backend == "faiss":
            distances, indices = _flat_chunks(database, queries, k, keep, chunk)
        else:
            raise ValueError(f"backend must be faiss or torch, got {backend!r}")
    indices = np.asarray(indices, dtype=np.int64)
    if indices.shape[1] < k:
        pad = k - indices.shape[1]
        indices = np.pad(indices, ((0, 0), (0, pad)), constant_values=-1)
        distances = np.pad(distances, ((0, 0), (0, pad)), constant_values=np.inf)
    return indices, np.asarray(distances, dtype=np.float32)


def shard_chunks(n_chunks: int, rank: int, world: int) -> tuple[int, int]:
    """Chunks [lo, hi) of an exact search's ``n_chunks`` that rank ``rank`` of ``world`` searches:
    contiguous runs of whole chunks in rank order, their numbers differing by at most one."""
    return n_chunks * rank // world, n_chunks * (rank + 1) // world


def sharded_search(
    database,
    queries: np.ndarray,
    k: int,
    database_valid: np.ndarray | None,
    rank: int,
    world: int,
    device: str = "cpu",
    gather=None,
    chunk_rows: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact search with the database split between the ranks of a process group (torchrun): each
    rank reads and searches only its shard, whole chunks of the valid rows (``shard_chunks``) with
    the backend and query blocks one process would use, so each chunk's distances are computed
    exactly as one search computes them; the ranks' top-k are gathered and merged (by distance,
    ties by database index, as one search orders them): every rank returns the neighbours and
    distances of :func:`exact_search` over the whole database. ``gather(obj) -> [obj of each
    rank]``: the collective (default ``torch.distributed.all_gather_object``)."""
    n = database.shape[0]
    valid = np.ones(n, bool) if database_valid is None else np.asarray(database_valid, bool)
    keep = np.flatnonzero(valid)
    backend = default_backend(len(queries), len(keep), queries.shape[1], device)
    chunk = chunk_rows or max(1, CHUNK_BYTES // (4 * database.shape[1]))
    lo, hi = shard_chunks(-(-len(keep) // chunk), rank, world)
    mine = np.zeros(n, bool)
    mine[keep[lo * chunk : hi * chunk]] = True
    found = exact_search(database, queries, k, mine, "exact", device, backend, chunk, len(keep))
    if gather is None:
        import torch.distributed as dist

        def gather(obj):
            parts: list = [None] * world
            dist.all_gather_object(parts, obj)
            return parts

    parts = gather(found)
    if len(parts) != world:
        raise ValueError(f"gathered {len(parts)} shards' results, expected {world}")
    # shards in rank order are in database order: a stable sort by distance keeps exact ties by
    # index; the -1 / +inf padding of a shard with fewer than k valid rows sorts last
    idx = np.concatenate([p[0] for p in parts], axis=1)
    dist_ = np.concatenate([p[1] for p in parts], axis=1)
    order = np.argsort(dist_, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(idx, order, 1), np.take_along_axis(dist_, order, 1)


def grouped_search(
    database: np.ndarray,
    queries: np.ndarray,
    k: int,
    database_groups: np.ndarray,
    query_groups: np.ndarray,
    database_valid: np.ndarray | None = None,
    kind: str = "exact",
    device: str = "cpu",
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`exact_search` in which each query only sees database rows of its own group (for MSLS
    challenge cities). Same outputs, indices into the whole database."""
    database_groups, query_groups = np.asarray(database_groups), np.asarray(query_groups)
    valid = np.ones(len(database), bool) if database_valid is None else np.asarray(database_valid)
    indices = np.full((len(queries), k), -1, dtype=np.int64)
    distances = np.full((len(queries), k), np.inf, dtype=np.float32)
    for group in np.unique(query_groups):
        q_rows = np.flatnonzero(query_groups == group)
        db_rows = np.flatnonzero(database_groups == group)
        if db_rows.size == 0:
            continue
        local, dist = exact_search(database[db_rows], queries[q_rows], k, valid[db_rows], kind,
                                   device)  # fmt: skip
        indices[q_rows] = np.where(local >= 0, db_rows[np.clip(local, 0, None)], -1)
        distances[q_rows] = dist
    return indices, distances
