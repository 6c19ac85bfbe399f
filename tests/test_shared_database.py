"""A shared database (SF-XL's four query sets, SVOX's five): the database is extracted once, into an
entry of its own under the shared name, and every protocol over it reads that entry; its
descriptors and the recall are those of the same protocol without sharing."""

from __future__ import annotations

import json

import h5py
import numpy as np
import PIL.Image
import pytest

from tests.test_cli import run
from tests.test_protocols_2026 import vdd_name

ENTRY = """  {name}:
    description: d
    database: {{count: 6, {shared}layout: "test/database"}}
    queries: {{count: {queries}, layout: "test/queries_{folder}"}}
    ground_truth: {{source: s, formats: [vdd]}}
    positive: {{rule: utm-radius, threshold: 25, unit: m}}
    licence: l
    obtain: o
    source: {{formatter: vdd, files: [test/database, test/queries_{folder}]}}
"""
DATABASE = [(550000.0 + 40 * i, 4180000.0) for i in range(6)]  # 40 m apart: one positive each
# (east, index of the database image the query's picture is a noisy copy of)
QUERIES = {"queries_a": [(550003.0, 0), (550121.0, 5)],  # positives db 0 and db 3: R@1 1 of 2
           "queries_b": [(550200.0, 5), (550041.0, 1), (551000.0, 2)]}  # fmt: skip


def make_city(root):
    """Noise images under VDD's file names; each query a noisy copy of one database image."""
    rng = np.random.default_rng(0)
    pictures = rng.integers(0, 256, (len(DATABASE), 32, 24, 3))
    (root / "database").mkdir(parents=True)
    for i, (east, north) in enumerate(DATABASE):
        PIL.Image.fromarray(pictures[i].astype(np.uint8)).save(
            root / "database" / vdd_name(east, north, f"{i:04d}").replace(".jpg", ".png")
        )
    for folder, points in QUERIES.items():
        (root / folder).mkdir()
        for i, (east, source) in enumerate(points):
            noisy = np.clip(pictures[source] + rng.normal(0, 8, pictures[source].shape), 0, 255)
            PIL.Image.fromarray(noisy.astype(np.uint8)).save(
                root / folder / vdd_name(east, 4180000.0, f"{i:04d}").replace(".jpg", ".png")
            )


@pytest.fixture
def city(tmp_path, monkeypatch, capsys, isolated_dirs):
    """Two query sets over one database (city-a, city-b) and city-a again without sharing."""
    registry = tmp_path / "datasets.yaml"
    registry.write_text(
        "protocols:\n"
        + ENTRY.format(name="city-a", shared="shared: city, ", queries=2, folder="a")
        + ENTRY.format(name="city-b", shared="shared: city, ", queries=3, folder="b")
        + ENTRY.format(name="city-a-alone", shared="", queries=2, folder="a")
    )
    monkeypatch.setenv("VPRBENCH_DATASETS_YAML", str(registry))
    root = tmp_path / "CITY"
    make_city(root / "test")
    for name in ("city-a", "city-b", "city-a-alone"):
        code, _, err = run(["datasets", "format", name, "--from", str(root)], capsys, monkeypatch)
        assert code == 0, err
    return isolated_dirs


def opened_images(monkeypatch) -> list[str]:
    """Every image file PIL opens from now on (the loader threads' too)."""
    seen: list[str] = []
    real = PIL.Image.open

    def spy(fp, *args, **kwargs):
        seen.append(str(fp))
        return real(fp, *args, **kwargs)

    monkeypatch.setattr(PIL.Image, "open", spy)
    return seen


def extract(name, capsys, monkeypatch) -> str:
    code, out, err = run(["extract", "--model", "pixels", "--dataset", name], capsys, monkeypatch)
    assert code == 0, err
    return out


def test_the_second_query_set_extracts_no_database_image(city, capsys, monkeypatch):
    seen = opened_images(monkeypatch)
    out = extract("city-a", capsys, monkeypatch)
    assert sorted(p.split("/")[-2] for p in seen) == ["database"] * 6 + ["queries_a"] * 2
    assert "shared database 'city'" in out
    seen.clear()
    extract("city-b", capsys, monkeypatch)
    assert sorted(p.split("/")[-2] for p in seen) == ["queries_b"] * 3  # no database image
    seen.clear()
    extract("city-a", capsys, monkeypatch)
    assert seen == []  # everything cached

    store = city["cache"] / "descriptors"
    (shared,) = (store / "city" / "pixels").glob("*.h5")
    (a,) = (store / "city-a" / "pixels").glob("*.h5")
    (b,) = (store / "city-b" / "pixels").glob("*.h5")
    with h5py.File(shared) as f:
        assert sorted(f) == ["database", "database_valid"] and f["database"].shape[0] == 6
        key = json.loads(f.attrs["key"])
        assert key["dataset"] == "city" and key["splits"] == ["database"]
    for path, n in ((a, 2), (b, 3)):
        with h5py.File(path) as f:
            assert sorted(f) == ["queries", "queries_valid"] and f["queries"].shape[0] == n
            assert json.loads(f.attrs["key"])["database_entry"] == key  # the one shared entry

    # the same descriptors, byte for byte, as the protocol without sharing (one file, both splits)
    seen.clear()
    extract("city-a-alone", capsys, monkeypatch)
    assert len(seen) == 8
    (alone,) = (store / "city-a-alone" / "pixels").glob("*.h5")
    with h5py.File(alone) as f, h5py.File(shared) as s, h5py.File(a) as q:
        assert f["database"][...].tobytes() == s["database"][...].tobytes()
        assert f["queries"][...].tobytes() == q["queries"][...].tobytes()


def test_evaluation_over_a_shared_database(city, capsys, monkeypatch):
    """Recall of city-a read through the shared entry equals that of city-a-alone, and the run
    record names both files."""
    records = {}
    for name in ("city-a", "city-a-alone", "city-b"):
        argv = ["evaluate", "--model", "pixels", "--dataset", name, "--k", "1,5", "--json"]
        code, out, err = run(argv, capsys, monkeypatch)
        assert code == 0, err
        records[name] = json.loads(out)
    a, alone, b = records["city-a"], records["city-a-alone"], records["city-b"]
    # by hand: query 0 (3 m from db 0) is a copy of db 0, query 1 (1 m from db 3) one of db 5
    assert a["results"]["recall"]["1"] == pytest.approx(0.5)
    # city-b: query 0 (db 5, its positive) and query 1 (db 1) right; query 2 has no positive
    # and counts as a miss (the default policy, as the official evaluations)
    assert b["results"]["recall"]["1"] == pytest.approx(2 / 3)
    same = ("recall", "ci95", "num_evaluated", "num_skipped_database_images")
    assert [a["results"][k] for k in same] == [alone["results"][k] for k in same]
    assert "/descriptors/city/pixels/" in a["files"]["database_descriptors"]
    assert a["files"]["database_descriptors"] == b["files"]["database_descriptors"]
    assert "database_descriptors" not in alone["files"]
    assert a["protocol"]["database_shared"] == "city"
    assert alone["protocol"]["database_shared"] is None


def test_a_key_with_a_database_entry_is_complete_only_with_it(city, capsys, monkeypatch):
    """Deleting the shared database's file makes every protocol over it recompute the database
    (and only the database): the queries' entry alone is not a complete entry."""
    extract("city-a", capsys, monkeypatch)
    store = city["cache"] / "descriptors"
    (shared,) = (store / "city" / "pixels").glob("*.h5")
    before = h5py.File(shared)["database"][...]
    shared.unlink()
    seen = opened_images(monkeypatch)
    extract("city-b", capsys, monkeypatch)
    assert sorted(p.split("/")[-2] for p in seen) == ["database"] * 6 + ["queries_b"] * 3
    np.testing.assert_array_equal(h5py.File(shared)["database"][...], before)


def test_torchrun_makes_the_shared_entry_as_one_process(city, tmp_path, capsys, monkeypatch):
    """Two ranks (gloo) share each entry's batches: the shared database's file and the queries'
    equal one process's byte for byte; the second query set leaves the database file untouched."""
    import os
    import socket
    import subprocess
    import sys

    def torchrun(name: str, cache) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
             "--master_addr", "127.0.0.1", "--master_port", str(port), "-m", "vprbench",
             "extract", "--model", "pixels", "--dataset", name, "--batch-size", "2",
             "--cache-dir", str(cache)],
            capture_output=True, text=True, timeout=300,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]

    argv = ["extract", "--model", "pixels", "--dataset", "city-a", "--batch-size", "2"]
    code, _, err = run([*argv, "--cache-dir", str(tmp_path / "one")], capsys, monkeypatch)
    assert code == 0, err
    torchrun("city-a", tmp_path / "two")
    one, two = (sorted((tmp_path / d / "descriptors").rglob("*.h5")) for d in ("one", "two"))
    assert [p.relative_to(tmp_path / "one") for p in one] == [
        p.relative_to(tmp_path / "two") for p in two
    ]  # the same keys: descriptors/city/... and descriptors/city-a/...
    for a_path, b_path in zip(one, two, strict=True):
        with h5py.File(a_path) as a, h5py.File(b_path) as b:
            assert set(a) == set(b) and dict(a.attrs) == dict(b.attrs)
            for name in a:
                assert a[name][()].tobytes() == b[name][()].tobytes(), name
    (shared,) = (tmp_path / "two" / "descriptors" / "city").rglob("*.h5")
    before = shared.stat().st_mtime_ns, shared.stat().st_ino
    torchrun("city-b", tmp_path / "two")
    assert (shared.stat().st_mtime_ns, shared.stat().st_ino) == before
    assert len(list((tmp_path / "two" / "descriptors" / "city-b").rglob("*.h5"))) == 1
    assert not list((tmp_path / "two").rglob("*.npz"))  # shards merged and removed


def test_a_shared_database_finished_meanwhile_is_read_not_computed(city, capsys, monkeypatch):
    """Two runs over one shared database: the one that waited for the database's lock finds it
    complete and goes on with its queries (it must not take the one-split entry for a whole one)."""
    from vprbench.extract.cache import DescriptorCache

    real_lock, other = DescriptorCache.lock, []

    def lock(self, key):
        if key.get("splits") == ["database"] and not other:  # another run finishes it meanwhile
            other.append("city-a")
            extract("city-a", capsys, monkeypatch)
        return real_lock(self, key)

    monkeypatch.setattr(DescriptorCache, "lock", lock)
    seen = opened_images(monkeypatch)
    extract("city-b", capsys, monkeypatch)
    assert other and sorted(p.split("/")[-2] for p in seen) == (
        ["database"] * 6 + ["queries_a"] * 2 + ["queries_b"] * 3
    )  # the database once, by the other run
