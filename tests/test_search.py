import time

import numpy as np
import pytest

from vprbench.evaluate.search import exact_search


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
    from vprbench.evaluate.search import grouped_search

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


def _random_unit(rng, n, d):
    x = rng.normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_chunked_exact_search_in_faiss_and_torch_equals_one_flat_index():
    import faiss

    rng = np.random.default_rng(1)
    db, queries = _random_unit(rng, 1000, 48), _random_unit(rng, 50, 48)
    valid = rng.random(1000) > 0.1
    # reference: one faiss flat index over the valid rows, mapped back to database indices
    keep = np.flatnonzero(valid)
    index = faiss.IndexFlatL2(48)
    index.add(db[keep])
    ref_d, ref_local = index.search(queries, 20)
    ref_i = keep[ref_local]
    for backend, chunk in (("faiss", None), ("faiss", 77), ("torch", 77), ("torch", 5000)):
        idx, dist = exact_search(db, queries, 20, valid, backend=backend, chunk_rows=chunk)
        np.testing.assert_array_equal(idx, ref_i, err_msg=f"{backend} {chunk}")
        np.testing.assert_allclose(dist, ref_d, atol=1e-5)
    # fewer valid rows than k: padded, as before
    few = np.zeros(1000, dtype=bool)
    few[[3, 9]] = True
    idx, dist = exact_search(db, queries, 4, few, backend="torch", chunk_rows=1)
    assert set(idx[0, :2]) == {3, 9} and (idx[:, 2:] == -1).all() and np.isinf(dist[:, 2:]).all()


def test_ivf_indexes_train_on_the_database_and_lose_little():
    rng = np.random.default_rng(2)
    db = _random_unit(rng, 2000, 16)
    queries = db[:200] + 0.05 * _random_unit(rng, 200, 16)
    exact, _ = exact_search(db, queries, 1)
    for kind, floor in (("ivf-flat", 0.9), ("ivf-pq", 0.5)):
        idx, _ = exact_search(db, queries, 1, kind=kind)
        assert (idx[:, 0] == exact[:, 0]).mean() >= floor, kind
        timings, began = {}, time.perf_counter()
        again, _ = exact_search(db, queries, 1, kind=kind, timings=timings)
        elapsed = time.perf_counter() - began
        np.testing.assert_array_equal(idx, again)  # seeded k-means: the same index each time
        # the build (train and add) and the search timed apart, within the call, for an approximate
        # index only (a loop variable once overwrote the build's start: a negative build time)
        assert set(timings) == {"build_seconds", "search_seconds"}
        assert timings["build_seconds"] > 0 and timings["search_seconds"] > 0
        assert timings["build_seconds"] + timings["search_seconds"] <= elapsed
    untimed = {}
    exact_search(db, queries, 1, timings=untimed)
    assert untimed == {}
    with pytest.raises(ValueError, match="ivf-pq trains on the database: it needs at least 256"):
        exact_search(db[:200], queries, 1, kind="ivf-pq")


def test_evaluate_records_what_approximate_search_loses(capsys, monkeypatch):
    import json

    from tests.test_cli import run

    args = ["evaluate", "--model", "pixels", "--dataset", "nordland-sample", "--k", "1,5", "--json"]
    code, out, _ = run(args, capsys, monkeypatch)
    exact = json.loads(out)
    code, out, err = run([*args, "--search", "ivf-flat"], capsys, monkeypatch)
    assert code == 0, err
    approx = json.loads(out)
    assert approx["run_id"] != exact["run_id"]
    assert approx["settings"]["search"]["params"] == {"nlist": 15, "nprobe": 15}  # 600 // 39 lists
    assert approx["results"]["recall_exact"] == exact["results"]["recall"]
    for k in ("1", "5"):
        loss = exact["results"]["recall"][k] - approx["results"]["recall"][k]
        assert approx["results"]["search_loss"][k] == pytest.approx(loss)
    assert "ivf-flat search lost against exact search (points): R@1" in err
    assert "search_loss" not in exact["results"] and exact["settings"]["search"]["exact"]


def test_hnsw_runs_and_records_the_efsearch_faiss_uses(capsys, monkeypatch):
    """faiss searches HNSW with max(efSearch, k) candidates: evaluate searches for the largest k it
    reports (not the saved top-100), and records that efSearch, which is the one that ran."""
    import json

    import faiss
    import h5py

    from tests.test_cli import run

    args = ["evaluate", "--model", "pixels", "--dataset", "nordland-sample", "--search", "hnsw",
            "--json"]  # fmt: skip
    code, out, err = run([*args, "--k", "1,5"], capsys, monkeypatch)
    assert code == 0, err
    record = json.loads(out)
    params = record["settings"]["search"]
    assert params["params"]["efSearch"] == 16 and params["neighbours_saved"] == 5
    with np.load(record["files"]["predictions"]) as z:
        indices = z["indices"]
    assert indices.shape == (600, 5)
    # the same search, built independently: M 32, efConstruction 40, one thread, efSearch 16, k 5
    with h5py.File(record["files"]["descriptors"]) as f:
        database, queries = f["database"][...], f["queries"][...]
    index = faiss.IndexHNSWFlat(database.shape[1], 32)
    index.hnsw.efConstruction = 40
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        index.add(np.ascontiguousarray(database, dtype=np.float32))
    finally:
        faiss.omp_set_num_threads(threads)
    index.hnsw.efSearch = 16
    _, expected = index.search(np.ascontiguousarray(queries, dtype=np.float32), 5)
    np.testing.assert_array_equal(indices, expected)
    code, out, err = run([*args, "--k", "1,5,20"], capsys, monkeypatch)
    assert json.loads(out)["settings"]["search"]["params"]["efSearch"] == 20


def _matmul_ties_copies(database, queries, chunk_rows) -> bool:
    """Whether torch's float32 q @ x.T, chunk by chunk as the torch path computes it, gives the
    copies (rows r, r + 40, r + 80) of one database row the same value."""
    import torch

    q = torch.from_numpy(queries)
    parts = [q @ torch.from_numpy(database[s : s + chunk_rows]).T
             for s in range(0, len(database), chunk_rows)]  # fmt: skip
    scores = torch.cat(parts, dim=1)
    return bool(
        (scores[:, :40] == scores[:, 40:80]).all() and (scores[:, :40] == scores[:, 80:]).all()
    )


def test_lowest_index_topk_orders_exact_ties_by_index():
    """Exact ties, within the k and across the k-th value, come in ascending column order."""
    import torch

    from vprbench.evaluate.search import _lowest_index_topk

    dist = torch.tensor([[3.0, 1.0, 2.0, 1.0, 1.0, 0.5], [2.0, 2.0, 2.0, 2.0, 0.0, 9.0]])
    d, i = _lowest_index_topk(dist, 3)
    assert i.tolist() == [[5, 1, 3], [4, 0, 1]]
    assert d.tolist() == [[0.5, 1.0, 1.0], [0.0, 2.0, 2.0]]


@pytest.mark.parametrize("backend", ["faiss", "torch"])
def test_exact_ties_keep_the_lowest_database_index_on_every_backend(backend):
    """Three copies of each database descriptor: faiss returns the lowest-indexed copies first, and
    the torch path (CUDA, large CPU searches) must too, across chunks as well."""
    rng = np.random.default_rng(4)
    base = rng.standard_normal((40, 16)).astype(np.float32)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    database = np.concatenate([base, base, base])  # row r, r + 40 and r + 80 are the same
    queries = base[:10] + 0.01 * rng.standard_normal((10, 16)).astype(np.float32)
    for chunk_rows in (None, 7):
        if (
            backend == "torch"
            and chunk_rows
            and not _matmul_ties_copies(database, queries, chunk_rows)
        ):
            pytest.skip(
                "this CPU's float32 matrix product gives copies of one row different "
                "distances by their position in a chunk (MKL on an AMD EPYC): no exact tie "
                "to order; _lowest_index_topk is tested on exact ties directly"
            )
        indices, _ = exact_search(database, queries, 5, backend=backend, chunk_rows=chunk_rows)
        assert indices[:, :3].tolist() == [[q, q + 40, q + 80] for q in range(10)]
        second = indices[:, 3]
        assert (second < 40).all()  # the next neighbour's lowest copy comes first
        assert (indices[:, 4] == second + 40).all()


def test_torch_search_in_blocks_of_queries_equals_one_flat_index(monkeypatch):
    """The torch path splits the queries into blocks whose distances fit DISTANCE_BYTES: blocks of
    3 queries against chunks of 50 rows give faiss' neighbours and distances."""
    import faiss

    from vprbench.evaluate import search

    rng = np.random.default_rng(5)
    database = rng.standard_normal((230, 24)).astype(np.float32)
    database /= np.linalg.norm(database, axis=1, keepdims=True)
    queries = rng.standard_normal((20, 24)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    monkeypatch.setattr(search, "DISTANCE_BYTES", 4 * 50 * 3)
    indices, distances = exact_search(database, queries, 10, backend="torch", chunk_rows=50)
    index = faiss.IndexFlatL2(24)
    index.add(database)
    expected_d, expected_i = index.search(queries, 10)
    np.testing.assert_array_equal(indices, expected_i)
    np.testing.assert_allclose(distances, expected_d, atol=1e-5)


class _CountingRows:
    """A database that records how many rows each read asks for (as DiskRows reads them)."""

    def __init__(self, array):
        self.array, self.shape, self.reads = array, array.shape, []

    def __len__(self):
        return len(self.array)

    def __getitem__(self, index):
        out = self.array[index]
        self.reads.append(len(out))
        return out


def test_ivf_trains_on_a_seeded_sample_and_adds_in_chunks(monkeypatch):
    """Past TRAIN_BYTES an IVF index trains on a seeded sample (recorded in its parameters) and the
    database is read a chunk at a time, never whole; below it nothing changes, and adding in chunks
    builds the same index as one add."""
    import vprbench.evaluate.search as search

    rng = np.random.default_rng(3)
    db = _random_unit(rng, 3000, 16)
    queries = db[:100] + 0.05 * _random_unit(rng, 100, 16)
    whole, _ = exact_search(db, queries, 5, kind="ivf-flat")
    monkeypatch.setattr(search, "CHUNK_BYTES", 4 * 16 * 700)  # 700 rows per chunk
    counting = _CountingRows(db)
    chunked, _ = exact_search(counting, queries, 5, kind="ivf-flat")
    np.testing.assert_array_equal(chunked, whole)
    assert counting.reads == [3000]  # trained on every row: added from that array, not read again
    assert "train_rows" not in search.approximate_params("ivf-flat", 3000, 16)
    monkeypatch.setattr(search, "TRAIN_BYTES", 4 * 16 * 1000)  # room for 1,000 training rows
    params = search.approximate_params("ivf-flat", 3000, 16)
    assert params == {"nlist": 76, "nprobe": 16, "train_rows": 39 * 76, "train_seed": 1234}
    monkeypatch.setattr(search, "TRAIN_BYTES", 4 * 16 * 39)
    params = search.approximate_params("ivf-pq", 100_000, 16)  # 1,265 lists: 39 rows each
    assert params["train_rows"] == 39 * 1265
    counting = _CountingRows(db)
    monkeypatch.setattr(search, "TRAIN_BYTES", 4 * 16 * 1000)
    monkeypatch.setattr(search, "IVF", dict(search.IVF, lists_per_sqrt_n=0.4))  # 22 lists: 858 rows
    sampled, _ = exact_search(counting, queries, 1, kind="ivf-flat")
    assert counting.reads == [1000, 700, 700, 700, 700, 200]  # the sample, then chunks: never whole
    exact, _ = exact_search(db, queries, 1)
    assert (sampled[:, 0] == exact[:, 0]).mean() >= 0.9


@pytest.mark.parametrize("backend", ["faiss", "torch"])
@pytest.mark.parametrize("world", [1, 2, 3, 5])
def test_sharded_search_merges_to_the_neighbours_of_one_search(backend, world, monkeypatch):
    """Each rank's shard searched alone, the top-k merged: the neighbours and distances of one
    search over the whole database, exact ties (duplicate rows across shard borders) by index,
    invalid rows never returned, and shards smaller than k padded and merged past."""
    from vprbench.evaluate import search
    from vprbench.evaluate.search import shard_chunks, sharded_search

    monkeypatch.setattr(search, "default_backend", lambda *a, **k: backend)
    rng = np.random.default_rng(3)
    db = _unit(rng.normal(size=(23, 16)))
    db[[2, 9, 17]] = db[5]  # exact ties spread over the shards
    queries = np.concatenate([db[[5, 11]], _unit(rng.normal(size=(6, 16)))])
    valid = np.ones(23, bool)
    valid[[0, 9, 22]] = False
    want = exact_search(db, queries, 10, valid, backend=backend, chunk_rows=3)
    keep = np.flatnonzero(valid)  # 20 valid rows: 7 chunks of 3
    assert [shard_chunks(7, r, world) for r in range(world)][-1][1] == 7
    parts = []
    for rank in range(world):  # what each rank computes: its whole chunks alone
        lo, hi = shard_chunks(7, rank, world)
        mine = np.zeros(23, bool)
        mine[keep[lo * 3 : hi * 3]] = True
        parts.append(exact_search(db, queries, 10, mine, backend=backend, chunk_rows=3,
                                  plan_rows=20))  # fmt: skip
    for rank in range(world):

        def gather(own, rank=rank):
            np.testing.assert_array_equal(own[0], parts[rank][0])  # the rank's own shard
            return parts

        got = sharded_search(db, queries, 10, valid, rank, world, gather=gather, chunk_rows=3)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
    if backend == "faiss":  # exact ties (some CPUs' matmul gives copies distances by position)
        assert want[0][0, :3].tolist() == [2, 5, 17]  # db 5's copies by index; 9 is invalid


SHARDED_SCRIPT = """
import sys
import numpy as np
import torch.distributed as dist
from vprbench.evaluate.search import sharded_search
dist.init_process_group("gloo")
z = np.load(sys.argv[1])
found = sharded_search(z["db"], z["queries"], 12, z["valid"], dist.get_rank(), dist.get_world_size(),
                       chunk_rows=4)
np.savez(sys.argv[2] + f"-{dist.get_rank()}.npz", indices=found[0], distances=found[1])
dist.barrier()
dist.destroy_process_group()
"""


def test_sharded_search_over_gloo_equals_one_search(tmp_path):
    """Three torchrun ranks (gloo), each a third of the chunks, gathered by all_gather_object."""
    import os
    import socket
    import subprocess
    import sys

    rng = np.random.default_rng(5)
    db = _unit(rng.normal(size=(40, 8)))
    db[[3, 30]] = db[20]
    queries = np.concatenate([db[[20]], _unit(rng.normal(size=(9, 8)))])
    valid = rng.random(40) > 0.2
    np.savez(tmp_path / "data.npz", db=db, queries=queries, valid=valid)
    (tmp_path / "sharded.py").write_text(SHARDED_SCRIPT)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "3", "--master_addr",
         "127.0.0.1", "--master_port", str(port), str(tmp_path / "sharded.py"),
         str(tmp_path / "data.npz"), str(tmp_path / "out")],
        capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    want = exact_search(db, queries, 12, valid, chunk_rows=4)
    for rank in range(3):
        with np.load(tmp_path / f"out-{rank}.npz") as got:
            np.testing.assert_array_equal(got["indices"], want[0])
            np.testing.assert_array_equal(got["distances"], want[1])


def test_torchrun_evaluate_shards_the_database_and_equals_one_process(tiny_dataset, tmp_path):
    """Two gloo ranks each search half the database; rank 0 writes the record, whose neighbours
    and recall equal one process's."""
    from tests.launch import evaluate_in_subprocess, torchrun

    argv = ["--model", "pixels", "--dataset", "tiny", "--k", "1,5"]
    one, one_pred = evaluate_in_subprocess(["-m", "vprbench"], argv, tmp_path / "one")
    two, two_pred = evaluate_in_subprocess(["-m", "vprbench"], argv, tmp_path / "two", torchrun())
    assert two["settings"]["search"]["shards"] == 2 and "shards" not in one["settings"]["search"]
    assert two["results"]["recall"] == one["results"]["recall"]
    for name in ("indices", "distances", "first_hit_rank"):
        np.testing.assert_array_equal(two_pred[name], one_pred[name])
