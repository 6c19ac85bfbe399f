import numpy as np
import pytest

from vprbench.search import exact_search


def _unit(rows):
    rows = np.asarray(rows, dtype=np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_exact_search_ranks_by_l2_and_reports_squared_distances():
    db = _unit([[1, 0], [0, 1], [-1, 0], [1, 1]])
    q = _unit([[1, 0.1]])
    idx, dist = exact_search(db, q, k=4)
    assert idx.tolist() == [[0, 3, 1, 2]]
    expected = ((db[idx[0]] - q[0]) ** 2).sum(axis=1)
    np.testing.assert_allclose(dist[0], expected, rtol=1e-5)


def test_invalid_database_rows_are_never_returned_and_padding():
    db = _unit([[1, 0], [0.9, 0.1], [0, 1]])
    q = _unit([[1, 0]])
    idx, dist = exact_search(db, q, k=3, database_valid=np.array([False, True, True]))
    assert idx.tolist() == [[1, 2, -1]]
    assert np.isinf(dist[0, 2])


def test_grouped_search_stays_within_each_group():
    from vprbench.search import grouped_search

    db = _unit([[1, 0], [0, 1], [0.9, 0.1], [0.1, 0.9]])
    q = _unit([[1, 0], [1, 0]])
    db_groups = np.array(["a", "b", "b", "a"])
    idx, dist = grouped_search(db, q, 3, db_groups, np.array(["a", "b"]))
    # query 0 (group a) sees only rows 0 and 3; query 1 (group b) only rows 2 and 1
    assert idx.tolist() == [[0, 3, -1], [2, 1, -1]]
    assert np.isinf(dist[:, 2]).all()
    ungrouped, _ = exact_search(db, q, 3)
    assert ungrouped[1].tolist() == [0, 2, 3]


def test_hnsw_search_is_deterministic_masks_invalid_rows_and_mostly_agrees():
    rng = np.random.default_rng(0)
    db = rng.normal(size=(2000, 32)).astype(np.float32)
    db /= np.linalg.norm(db, axis=1, keepdims=True)
    queries = db[:200] + 0.05 * rng.normal(size=(200, 32)).astype(np.float32)
    valid = np.ones(2000, dtype=bool)
    valid[5] = False
    exact, _ = exact_search(db, queries, 10, valid)
    a, da = exact_search(db, queries, 10, valid, kind="hnsw")
    b, db_ = exact_search(db, queries, 10, valid, kind="hnsw")
    np.testing.assert_array_equal(a, b)  # the graph is built on one thread: the same every time
    np.testing.assert_array_equal(da, db_)
    assert 5 not in a and (a[:, 0] == exact[:, 0]).mean() > 0.9
    assert (np.diff(da, axis=1) >= 0).all()  # ranked best first
    with pytest.raises(ValueError, match="search must be one of"):
        exact_search(db, queries, 10, kind="ivf")
