"""PCA post-processing of descriptors (the official D²-VPR / CricaVPR evaluation reduces 10,752-d to
4,096-d with a PCA fitted once on Pitts30k images).

A PCA is fitted once on cached descriptors, stored under ``<cache>/pca/<digest>.npz`` with its own key
(the descriptor cache key it was fitted on, the dimension and the sample), and applied at evaluation:
``(x - mean) @ components.T``, without re-normalising, as the official evaluation does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vprbench.atomic import write_npz
from vprbench.errors import VPRBenchError
from vprbench.extract.cache import CachedDescriptors, canonical_json, key_digest

MAX_FIT_IMAGES = 2**14  # the official fit uses at most 16,384 images


@dataclass
class PCA:
    """mean [D] and components [dim, D] (rows orthonormal, by decreasing variance)."""

    mean: np.ndarray
    components: np.ndarray
    explained_variance: np.ndarray
    key: dict
    path: Path | None = None

    @property
    def dim(self) -> int:
        return self.components.shape[0]

    def transform(self, x: np.ndarray) -> np.ndarray:
        """[N, D] -> [N, dim] float32."""
        if x.shape[1] != self.mean.shape[0]:
            raise VPRBenchError(
                f"PCA was fitted on {self.mean.shape[0]}-d descriptors, got {x.shape[1]}-d"
            )
        return ((x - self.mean) @ self.components.T).astype(np.float32)


def fit_sample(cached: CachedDescriptors, max_images: int = MAX_FIT_IMAGES) -> np.ndarray:
    """Database then query descriptors (valid rows only), thinned to at most ``max_images`` by
    evenly spaced indices so that the sample is deterministic."""
    rows = np.concatenate(
        [cached.database[cached.database_valid], cached.queries[cached.queries_valid]]
    )
    if len(rows) > max_images:
        rows = rows[np.linspace(0, len(rows) - 1, max_images).round().astype(int)]
    return rows


def fit_pca(x: np.ndarray, dim: int, key: dict | None = None) -> PCA:
    """Exact PCA by SVD of the centred data (float64). x: [N, D]; needs dim <= min(N, D)."""
    n, d = x.shape
    if not 1 <= dim <= min(n, d):
        raise VPRBenchError(
            f"PCA dimension must be between 1 and min({n} images, {d} dims), got {dim}"
        )
    import torch

    mean = x.mean(axis=0, dtype=np.float64)
    centred = torch.from_numpy(x.astype(np.float64) - mean)
    _, s, vh = torch.linalg.svd(centred, full_matrices=False)
    components = vh[:dim].numpy()
    # fix each component's sign (largest |loading| positive) so that refits give identical output
    signs = np.sign(components[np.arange(dim), np.abs(components).argmax(axis=1)])
    components = components * signs[:, None]
    variance = (s[:dim].numpy() ** 2) / max(n - 1, 1)
    return PCA(mean.astype(np.float32), components.astype(np.float32), variance, key or {})


def pca_key(fit_on: CachedDescriptors, dim: int, max_images: int) -> dict:
    return {"descriptors": fit_on.key, "dim": dim, "max_images": max_images, "sample": "even"}


def load_or_fit_pca(
    cache_dir: Path, fit_on: CachedDescriptors, dim: int, max_images: int = MAX_FIT_IMAGES
) -> PCA:
    """The stored PCA for this key, or a new fit that is then stored atomically."""
    key = pca_key(fit_on, dim, max_images)
    path = Path(cache_dir) / "pca" / f"{key_digest(key)}.npz"
    if path.is_file():
        with np.load(path) as z:
            if json.loads(str(z["key"])) == json.loads(canonical_json(key)):
                return PCA(z["mean"], z["components"], z["explained_variance"], key, path)
    pca = fit_pca(fit_sample(fit_on, max_images), dim, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_npz(
        path,
        mean=pca.mean,
        components=pca.components,
        explained_variance=pca.explained_variance,
        key=canonical_json(key),
    )
    pca.path = path
    return pca


def pca_record(pca: PCA) -> dict:
    """What the PCA was fitted on, and how that differs from the official fit."""
    fit = pca.key["descriptors"]
    return {
        "dim": pca.dim,
        "fit_dataset": fit["dataset"],
        "fit_sample": f"at most {pca.key['max_images']} evenly spaced valid database then query "
        f"descriptors of '{fit['dataset']}'",
        "official_fit": "a random 16,384 of every image under pitts30k/images (train, val and test; "
        "D2VPR util.compute_pca, parser.py --pca_dataset_folder): vprbench's sample differs",
        "max_images": pca.key["max_images"],
        "solver": "exact float64 SVD, deterministic signs (vprbench/pca.py)",
        "official_solver": "sklearn PCA(pca_dim) with svd_solver='auto', which picks the randomized "
        "SVD at the official shapes and is unseeded (random_state=None), so two official fits "
        "differ slightly (D2VPR util.py:59-87, CricaVPR util.py:53-66)",
        "renormalised": False,
        "file": str(pca.path),
    }
