"""Ground truth in memory: image lists plus explicit positives per query, and how to compute positives.

Every reader (vprbench/datasets/readers.py) produces a GroundTruth, whatever its source format, so the
rest of vprbench never sees UTM radii or frame windows: only sorted positive indices per query.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vprbench.errors import VPRBenchError


@dataclass
class GroundTruth:
    """Database and query image lists and the positives of each query.

    ``positives[i]`` is a sorted int64 array of database indices that count as correct for query ``i``
    (possibly empty). Image paths are relative to ``image_root`` when it is set.
    """

    database: list[str]
    queries: list[str]
    positives: list[np.ndarray]
    source_format: str
    positive_rule: str
    threshold: float
    image_root: Path | None = None
    notes: list[str] = field(default_factory=list)
    # Where the source has them: {"kind": "utm" | "frame", "database": [Nd, 2], "queries": [Nq, 2]}
    # ("frame" stores the frame number in column 0). Needed to export to VDD file names.
    coordinates: dict | None = None
    # Optional retrieval groups (MSLS cities): {"database": [Nd] names, "queries": [Nq] names}
    groups: dict | None = None
    # Where the source knows them, the VDD file names (or their sort-deciding prefix) of every image,
    # {"database": [Nd], "queries": [Nq]}: they give the official batch order (datasets/vdd.py).
    vdd_names: dict | None = None
    # Where the source knows them, the capture sequence of each query ([Nq] str; MSLS seq_info.csv
    # sequence_key): the clusters of the protocol's 'sequence' resampling rule.
    sequences: list[str] | None = None

    def __post_init__(self) -> None:
        if self.sequences is not None and len(self.sequences) != len(self.queries):
            raise VPRBenchError(
                f"ground truth has {len(self.sequences)} query sequences for {len(self.queries)} queries"
            )
        if len(self.positives) != len(self.queries):
            raise VPRBenchError(
                f"ground truth has {len(self.positives)} positive lists for "
                f"{len(self.queries)} queries"
            )
        n_db = len(self.database)
        for i, pos in enumerate(self.positives):
            if pos.size and (pos.min() < 0 or pos.max() >= n_db):
                raise VPRBenchError(
                    f"ground truth: query {i} lists database index {int(pos.max())} "
                    f"outside 0..{n_db - 1} ({n_db} database images)"
                )

    @property
    def num_without_positives(self) -> int:
        """How many queries have no positive at all."""
        return sum(1 for p in self.positives if p.size == 0)

    def digest(self) -> str:
        """sha256 over image lists and positives: changes whenever the ground truth does."""
        h = hashlib.sha256()
        for name in ("database", "queries"):
            h.update(name.encode())
            h.update("\n".join(getattr(self, name)).encode())
        indptr, indices = to_csr(self.positives)
        h.update(indptr.tobytes())
        h.update(indices.tobytes())
        return h.hexdigest()


def to_csr(positives: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Pack per-query positive lists into (indptr [Nq+1], indices [nnz]) int64 arrays."""
    lengths = np.array([p.size for p in positives], dtype=np.int64)
    indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    indices = (
        np.concatenate([np.asarray(p, dtype=np.int64) for p in positives])
        if positives
        else np.zeros(0, dtype=np.int64)
    )
    return indptr, indices.astype(np.int64)


def from_csr(indptr: np.ndarray, indices: np.ndarray) -> list[np.ndarray]:
    """Inverse of :func:`to_csr`."""
    return [indices[indptr[i] : indptr[i + 1]].astype(np.int64) for i in range(len(indptr) - 1)]


def normalise_positive_list(values) -> np.ndarray:
    """Any list-like of indices -> a sorted, de-duplicated int64 array."""
    arr = np.asarray(values, dtype=np.int64).reshape(-1)
    return np.unique(arr)


def positives_within_radius(
    query_xy: np.ndarray, db_xy: np.ndarray, radius: float
) -> list[np.ndarray]:
    """Database indices within ``radius`` (inclusive, Euclidean) of each query.

    query_xy: [Nq, 2] and db_xy: [Nd, 2] coordinates (UTM metres, or any planar unit).
    Returns Nq sorted int64 arrays. Exact, in float64; candidates are pre-selected on a sorted x axis.
    """
    query_xy = np.asarray(query_xy, dtype=np.float64)
    db_xy = np.asarray(db_xy, dtype=np.float64)
    if query_xy.ndim != 2 or query_xy.shape[1] != 2 or db_xy.ndim != 2 or db_xy.shape[1] != 2:
        raise VPRBenchError(
            f"coordinates must be [N, 2]; got queries {query_xy.shape}, database {db_xy.shape}"
        )
    order = np.argsort(db_xy[:, 0], kind="stable")
    sorted_x = db_xy[order, 0]
    lo = np.searchsorted(sorted_x, query_xy[:, 0] - radius, side="left")
    hi = np.searchsorted(sorted_x, query_xy[:, 0] + radius, side="right")
    r2 = radius * radius
    out = []
    for q in range(len(query_xy)):
        cand = order[lo[q] : hi[q]]
        d2 = ((db_xy[cand] - query_xy[q]) ** 2).sum(axis=1)
        out.append(np.sort(cand[d2 <= r2]).astype(np.int64))
    return out


def positives_within_window(query_frames: np.ndarray, db_frames: np.ndarray, window: float):
    """Database indices whose frame number is within ``window`` (inclusive) of each query's frame."""
    q = np.asarray(query_frames, dtype=np.float64).reshape(-1)
    d = np.asarray(db_frames, dtype=np.float64).reshape(-1)
    order = np.argsort(d, kind="stable")
    sd = d[order]
    lo = np.searchsorted(sd, q - window, side="left")
    hi = np.searchsorted(sd, q + window, side="right")
    return [np.sort(order[lo[i] : hi[i]]).astype(np.int64) for i in range(len(q))]
