import numpy as np
import pytest

from vprbench.errors import VPRBenchError
from vprbench.evaluate.pca import fit_pca, fit_sample, load_or_fit_pca
from vprbench.extract.cache import CachedDescriptors


def test_pca_recovers_a_known_subspace():
    # a 20 x 25 grid on the plane of e0 and e1 inside 5-d (uncorrelated axes, spreads 3 and 1),
    # offset by a mean: the principal axes are exactly e0 then e1
    a, b = np.meshgrid(np.linspace(-3, 3, 20), np.linspace(-1, 1, 25), indexing="ij")
    coords = np.stack([a.ravel(), b.ravel()], axis=1)
    x = np.zeros((500, 5), dtype=np.float32)
    x[:, :2] = coords
    x += np.array([1, 2, 3, 4, 5], dtype=np.float32)
    pca = fit_pca(x, 2)
    np.testing.assert_allclose(pca.mean, [1, 2, 3, 4, 5], atol=1e-6)
    np.testing.assert_allclose(np.abs(pca.components), np.eye(5)[:2], atol=1e-6)
    np.testing.assert_allclose(pca.explained_variance, coords.var(0, ddof=1)[[0, 1]], rtol=1e-5)
    y = pca.transform(x)
    # distances within the plane are preserved exactly
    np.testing.assert_allclose(np.linalg.norm(y[0] - y[1]), np.linalg.norm(x[0] - x[1]), rtol=1e-5)
    with pytest.raises(VPRBenchError, match="PCA dimension must be between 1 and min"):
        fit_pca(x, 6)
    with pytest.raises(VPRBenchError, match="fitted on 5-d descriptors, got 4-d"):
        pca.transform(x[:, :4])


def test_pca_is_stored_once_under_its_own_key(tmp_path):
    rng = np.random.default_rng(1)
    cached = CachedDescriptors(
        path=tmp_path / "x.h5",
        key={"dataset": "d", "model": "m"},
        database=rng.normal(size=(30, 8)).astype(np.float32),
        queries=rng.normal(size=(10, 8)).astype(np.float32),
        database_valid=np.ones(30, bool),
        queries_valid=np.array([True] * 9 + [False]),
    )
    assert len(fit_sample(cached)) == 39
    assert len(fit_sample(cached, max_images=20)) == 20
    first = load_or_fit_pca(tmp_path, cached, 4)
    mtime = first.path.stat().st_mtime_ns
    again = load_or_fit_pca(tmp_path, cached, 4)
    assert again.path == first.path and again.path.stat().st_mtime_ns == mtime
    np.testing.assert_array_equal(again.components, first.components)
    other = load_or_fit_pca(tmp_path, cached, 3)
    assert other.path != first.path and other.dim == 3
