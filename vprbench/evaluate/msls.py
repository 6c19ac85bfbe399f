"""The mapillary_sls prediction file of an evaluation (its official scorer's input)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vprbench.datasets.formatted import FormattedDataset


def msls_prediction_lines(dataset: FormattedDataset, indices: np.ndarray, k: int = 25) -> str:
    """The mapillary_sls prediction format: per query, its key then its ``k`` ranked database keys.
    Every line has exactly k keys (the official scorer reads them with np.loadtxt, which rejects
    ragged rows); raises ValueError if a query has fewer than k results (a skipped query image, or a
    city database smaller than k)."""
    key = lambda path: Path(path).stem  # noqa: E731
    short = [q for q, row in enumerate(indices) if (row[:k] < 0).any() or len(row) < k]
    if short:
        raise ValueError(
            f"{len(short)} queries have fewer than {k} results (first: {dataset.queries[short[0]]})"
        )
    lines = [
        " ".join([key(q), *(key(dataset.database[i]) for i in row[:k])])
        for q, row in zip(dataset.queries, indices, strict=True)
    ]
    return "\n".join(lines) + "\n"
