"""Nearest-neighbour search with faiss. Exact (flat L2 on L2-normalised descriptors) by default."""

from __future__ import annotations

import faiss
import numpy as np


def exact_search(
    database: np.ndarray, queries: np.ndarray, k: int, database_valid: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k database indices for each query by exact L2 distance (faiss IndexFlatL2).

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
    index = faiss.IndexFlatL2(database.shape[1])
    index.add(database[keep])
    distances, local = index.search(queries, min(k, len(keep)))
    indices = np.where(local >= 0, keep[np.clip(local, 0, None)], -1).astype(np.int64)
    if indices.shape[1] < k:
        pad = k - indices.shape[1]
        indices = np.pad(indices, ((0, 0), (0, pad)), constant_values=-1)
        distances = np.pad(distances, ((0, 0), (0, pad)), constant_values=np.inf)
    return indices, distances.astype(np.float32)
