"""Nearest-neighbour search with faiss. Exact (flat L2 on L2-normalised descriptors) by default;
HNSW for audits of what approximate search changes."""

from __future__ import annotations

import faiss
import numpy as np

# Approximate search for audits: HNSW over the same L2 distances. M=32 and faiss' defaults
# efConstruction=40, efSearch=16 (raised to k when k is larger, as faiss does). The graph is built on
# one thread, so that two runs build the same graph and return the same neighbours.
HNSW = {"M": 32, "efConstruction": 40, "efSearch": 16}
SEARCHES = ("exact", "hnsw")


def _index(kind: str, dim: int):
    if kind == "exact":
        return faiss.IndexFlatL2(dim)
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, HNSW["M"])
        index.hnsw.efConstruction = HNSW["efConstruction"]
        return index
    raise ValueError(f"search must be one of {SEARCHES}, got {kind!r}")


def exact_search(
    database: np.ndarray,
    queries: np.ndarray,
    k: int,
    database_valid: np.ndarray | None = None,
    kind: str = "exact",
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k database indices for each query by exact L2 distance (faiss IndexFlatL2), or by an
    HNSW graph with ``kind="hnsw"`` (approximate: a true neighbour can be missed).

    database: [Nd, D] and queries: [Nq, D] float32, L2-normalised (same ranking as cosine).
    database_valid: optional [Nd] bool; invalid rows (images skipped at extraction) are never returned.
    Returns (indices [Nq, k] int64, squared L2 distances [Nq, k] float32); slots beyond the number of
    valid database rows hold -1 and +inf.
    """
    database = np.ascontiguousarray(database, dtype=np.float32)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    assert database.ndim == 2 and queries.ndim == 2 and database.shape[1] == queries.shape[1], (
        f"descriptor shapes differ: database {database.shape}, queries {queries.shape}"
    )
    keep = np.arange(len(database)) if database_valid is None else np.flatnonzero(database_valid)
    index = _index(kind, database.shape[1])
    n_search = min(k, len(keep))
    if kind == "hnsw":
        threads = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)
        try:
            index.add(database[keep])
        finally:
            faiss.omp_set_num_threads(threads)
        index.hnsw.efSearch = max(HNSW["efSearch"], n_search)
    else:
        index.add(database[keep])
    distances, local = index.search(queries, n_search)
    indices = np.where(local >= 0, keep[np.clip(local, 0, None)], -1).astype(np.int64)
    distances = np.where(local >= 0, distances, np.inf)
    if indices.shape[1] < k:
        pad = k - indices.shape[1]
        indices = np.pad(indices, ((0, 0), (0, pad)), constant_values=-1)
        distances = np.pad(distances, ((0, 0), (0, pad)), constant_values=np.inf)
    return indices, distances.astype(np.float32)


def grouped_search(
    database: np.ndarray,
    queries: np.ndarray,
    k: int,
    database_groups: np.ndarray,
    query_groups: np.ndarray,
    database_valid: np.ndarray | None = None,
    kind: str = "exact",
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
        local, dist = exact_search(database[db_rows], queries[q_rows], k, valid[db_rows], kind)
        indices[q_rows] = np.where(local >= 0, db_rows[np.clip(local, 0, None)], -1)
        distances[q_rows] = dist
    return indices, distances
