"""The descriptor store at scale: fp16 storage (in the key and the record; recall equal to fp32's
within a tolerance on the embedded sample) and databases read from disk by rows, which a search
streams in chunks."""

from __future__ import annotations

import json

import h5py
import numpy as np

from tests.test_cli import run
from vprbench.evaluate.search import exact_search
from vprbench.extract.cache import CachedDescriptors, DescriptorCache, DiskRows, disk_rows


def evaluate_json(capsys, monkeypatch, *extra):
    code, out, err = run(["evaluate", "--model", "pixels", "--dataset", "nordland-sample",
                          "--json", *extra], capsys, monkeypatch)  # fmt: skip
    assert code == 0, err
    return json.loads(out)


def cache_files(cache):
    return sorted(cache.rglob("*.h5"))


def test_fp16_store_is_its_own_entry_and_keeps_the_recall(capsys, monkeypatch, isolated_dirs):
    full = evaluate_json(capsys, monkeypatch)
    (fp32_file,) = cache_files(isolated_dirs["cache"])
    half = evaluate_json(capsys, monkeypatch, "--store", "fp16")
    fp16_file = next(p for p in cache_files(isolated_dirs["cache"]) if p != fp32_file)
    assert half["settings"]["store"] == "fp16" and full["settings"]["store"] == "fp32"
    assert half["run_id"] != full["run_id"]
    with h5py.File(fp32_file) as a, h5py.File(fp16_file) as b:
        assert a["database"].dtype == np.float32 and b["database"].dtype == np.float16
        assert json.loads(b.attrs["key"])["store"] == "fp16" and "store" not in json.loads(
            a.attrs["key"]
        )
        # float16 keeps 11 significant bits: L2-normalised values move by at most 2^-12
        assert np.abs(a["database"][...] - b["database"][...]).max() <= 2.0**-12
    # 600 queries: one query is 1/600; rounding may move a near-tie, not more than 3 queries
    full_r, half_r = full["results"]["recall"], half["results"]["recall"]
    assert full_r["1"] == 68 / 600  # pixels on the sample (the quickstart's 11.33)
    for k in ("1", "5", "10", "20"):
        assert abs(half_r[k] - full_r[k]) <= 3 / 600, (k, half_r, full_r)
    # the fp16 descriptors come back as rows read from disk, float16 (search computes in fp32)
    cached = DescriptorCache(isolated_dirs["cache"]).load(
        json.loads(h5py.File(fp16_file).attrs["key"])
    )
    rows = cached.rows("database")
    assert isinstance(rows, DiskRows) and rows.dtype == np.float16
    assert np.array_equal(np.asarray(rows), cached.database)


def test_a_database_read_by_rows_searches_as_the_array_in_memory(tmp_path):
    rng = np.random.default_rng(0)
    database = rng.standard_normal((5000, 64)).astype(np.float32)
    database /= np.linalg.norm(database, axis=1, keepdims=True)
    queries = database[rng.choice(5000, 40)] + 0.05 * rng.standard_normal((40, 64)).astype(
        np.float32
    )
    path = tmp_path / "d.h5"
    with h5py.File(path, "w") as f:  # as Assembly writes it: contiguous, uncompressed
        f.create_dataset("database", shape=database.shape, dtype=np.float32, fillvalue=0.0)
        f["database"][...] = database
        f.create_dataset("chunked", data=database, chunks=(100, 64))
    mapped = disk_rows(path, "database")
    assert isinstance(mapped, DiskRows) and np.array_equal(np.asarray(mapped), database)
    mask = rng.random(5000) < 0.3
    for index in (slice(10, 20), np.array([3, 4, 5, 900, 4999]), mask, 17, (slice(0, 4), 2)):
        np.testing.assert_array_equal(mapped[index], database[index])
    assert disk_rows(path, "chunked") is None  # not mappable: read instead
    valid = np.ones(5000, bool)
    valid[::7] = False
    for backend in ("faiss", "torch"):
        got = exact_search(mapped, queries, 10, valid, backend=backend, chunk_rows=700)
        want = exact_search(database, queries, 10, valid, backend=backend, chunk_rows=5000)
        np.testing.assert_array_equal(got[0], want[0])
    lazy = CachedDescriptors(path, key={}, database_valid=valid, queries_valid=np.ones(1, bool))
    assert isinstance(lazy.rows("database"), DiskRows)
    assert np.array_equal(lazy.database, database) and lazy.rows("database") is lazy.database
