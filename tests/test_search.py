import numpy as np

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
