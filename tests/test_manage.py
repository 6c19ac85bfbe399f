"""Importing, formatting and verifying datasets; the embedded sample."""

import numpy as np
import pytest
from PIL import Image

from tests.conftest import SHARED_DATA, make_vpr_bench_folder
from vprbench.datasets.formatted import list_formatted, load_formatted
from vprbench.datasets.manage import (
    embedded_sample_path,
    ensure_sample,
    import_dataset,
    open_dataset,
    verify_dataset,
)
from vprbench.datasets.protocols import load_registry
from vprbench.errors import VPRBenchError
from vprbench.paths import data_root


def test_import_writes_explicit_positives(tmp_path):
    folder = make_vpr_bench_folder(tmp_path / "src", 5, [[0, 1], [3], []])
    out, gt = import_dataset(folder, "vpr-bench", "mine", data_root(), load_registry())
    ds = load_formatted("mine", data_root())
    assert ds.folder == out and ds.manifest["protocol"] is None
    assert [p.tolist() for p in ds.positives] == [[0, 1], [3], []]
    assert ds.manifest["num_queries_without_positives"] == 1
    assert ds.image_path(ds.queries[2]).is_file()
    assert ds.digest == gt.digest()


def test_import_under_a_protocol_name_asserts_counts(tmp_path):
    folder = make_vpr_bench_folder(tmp_path / "src", 5, [[0], [1]])
    with pytest.raises(VPRBenchError, match="5 database images, but protocol 'sped' expects 607"):
        import_dataset(folder, "vpr-bench", "sped", data_root(), load_registry())
    assert list_formatted(data_root()) == []  # nothing half-written
    assert not data_root().exists() or list(data_root().iterdir()) == []


def test_import_names_missing_images(tmp_path):
    folder = make_vpr_bench_folder(tmp_path / "src", 4, [[0]])
    (folder / "ref" / "0000002.png").unlink()
    (folder / "ref" / "0000003.png").unlink()
    # The VPR-Bench reader lists images from disk; import gsv-cities lists that name absent files.
    np.save(tmp_path / "x_dbImages.npy", np.array([f"ref/{i:07d}.png" for i in range(4)]))
    np.save(tmp_path / "x_qImages.npy", np.array(["query/0000000.png"]))
    gt = np.empty(1, dtype=object)
    gt[0] = np.array([0])
    np.save(tmp_path / "x_gt.npy", gt, allow_pickle=True)
    with pytest.raises(
        VPRBenchError, match=r"2 image\(s\) missing: ref/0000002.png, ref/0000003.png"
    ):
        import_dataset(tmp_path, "gsv-cities", "x", data_root(), load_registry(), image_root=folder)
    assert list_formatted(data_root()) == []


def test_reimport_replaces_atomically(tmp_path):
    a = make_vpr_bench_folder(tmp_path / "a", 3, [[0]])
    b = make_vpr_bench_folder(tmp_path / "b", 4, [[1], [2]], seed=1)
    import_dataset(a, "vpr-bench", "d", data_root(), load_registry())
    import_dataset(b, "vpr-bench", "d", data_root(), load_registry())
    ds = load_formatted("d", data_root())
    assert len(ds.database) == 4 and [p.tolist() for p in ds.positives] == [[1], [2]]
    assert sorted(p.name for p in data_root().iterdir()) == ["d"]


def test_verify_reports_unreadable_and_missing(tmp_path):
    folder = make_vpr_bench_folder(tmp_path / "src", 3, [[0], [1]])
    import_dataset(folder, "vpr-bench", "v", data_root(), load_registry())
    assert verify_dataset("v", data_root(), load_registry()).ok
    (folder / "ref" / "0000001.png").write_bytes(b"not a png")
    (folder / "query" / "0000000.png").unlink()
    report = verify_dataset("v", data_root(), load_registry())
    assert report.unreadable == ["ref/0000001.png"] and report.missing == ["query/0000000.png"]
    assert not report.ok and report.checked_images == 5


def test_embedded_sample_is_real_nordland_and_small():
    folder = embedded_sample_path()
    files = [p for p in folder.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) < 5 * 1024 * 1024
    ds = ensure_sample(data_root(), load_registry())
    assert (len(ds.database), len(ds.queries)) == (600, 600)
    assert ds.database[0] == "ref/images-12010.png" and ds.queries[0] == "query/images-12010.png"
    assert [p.tolist() for p in ds.positives[:2]] == [[0, 1], [0, 1, 2]]
    assert ds.positives[599].tolist() == [598, 599]
    with Image.open(ds.image_path(ds.queries[10])) as im:
        assert im.size == (64, 32)
    assert verify_dataset("nordland-sample", data_root(), load_registry()).ok


def test_embedded_sample_matches_shared_source(shared_data):
    src = SHARED_DATA / "nordland_64x32"
    folder = embedded_sample_path()
    for sub, season in (("ref", "summer"), ("query", "winter")):
        names = sorted(p.name for p in (folder / sub).iterdir())
        assert len(names) == 600
        for name in (names[0], names[299], names[-1]):
            assert (folder / sub / name).read_bytes() == (src / season / name).read_bytes()


def test_open_dataset_errors():
    registry = load_registry()
    with pytest.raises(
        VPRBenchError,
        match="'sped' is not formatted .* obtain it: .vprbench datasets download sped",
    ):
        open_dataset("sped", data_root(), registry)
    with pytest.raises(VPRBenchError, match="unknown dataset 'spedd'; valid names: .*sped"):
        open_dataset("spedd", data_root(), registry)
