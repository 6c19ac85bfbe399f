"""VDD conventions that decide numbers, checked on the real image lists of ../shared/data: Nordland**
positives on the cleaned-list position (one ground truth through format, import and export), frames
read back from VDD names, and the official batch order of SPED and MSLS."""

from pathlib import Path

import numpy as np
import pandas as pd

from tests.test_formatters import make_msls, registry_with, touch_image
from vprbench.datasets.export import export_dataset
from vprbench.datasets.formatted import load_formatted
from vprbench.datasets.groundtruth import to_csr
from vprbench.datasets.manage import format_dataset, import_dataset
from vprbench.datasets.protocols import load_registry
from vprbench.datasets.vdd import msls_name_prefix, pair_name
from vprbench.paths import data_root

N_PNV = 27592


def _real_nordland_names(shared_data) -> list[str]:
    lines = (shared_data / "patchnetvlad" / "nordland_imageNames_index.txt").read_text().split()
    return [Path(line).name for line in lines]


def _window(n, i, w=10):
    return list(range(max(0, i - w), min(n, i + w + 1)))


def test_nordland_pnv_is_one_ground_truth_on_the_cleaned_list(shared_data, tmp_path):
    names = _real_nordland_names(shared_data)
    assert len(names) == N_PNV and names[1057] == "images-01259.png"
    assert names[1058] == "images-01810.png"  # the first gap: 551 frames removed
    root = tmp_path / "raw"
    for season in ("summer", "winter"):
        (root / season).mkdir(parents=True)
        for name in names:
            (root / season / name).touch()
    (root / "cleanImageNames.txt").write_text("\n".join(names) + "\n")
    registry = load_registry()

    # 1. datasets format: positives are +/-10 positions in the cleaned list, across the gaps
    format_dataset("nordland-pnv", root, data_root(), registry)
    formatted = load_formatted("nordland-pnv", data_root())
    assert formatted.positives[1057].tolist() == list(range(1047, 1068))
    assert formatted.positives[0].tolist() == _window(N_PNV, 0)
    indptr, indices = to_csr(formatted.positives)
    expected = [_window(N_PNV, i) for i in range(N_PNV)]
    assert np.array_equal(indices, np.concatenate(expected))
    assert np.array_equal(np.diff(indptr), [len(e) for e in expected])

    # 2. datasets import --format pnv with Patch-NetVLAD's nordland.npz: the same ground truth
    (tmp_path / "db.txt").write_text("\n".join(f"summer/{n}" for n in names))
    (tmp_path / "q.txt").write_text("\n".join(f"winter/{n}" for n in names))
    import_dataset(
        shared_data / "patchnetvlad" / "nordland.npz",
        "pnv",
        "nordland-pnv",
        tmp_path / "from-npz",
        registry,
        image_root=root,
        database_list=tmp_path / "db.txt",
        queries_list=tmp_path / "q.txt",
    )
    from_npz = load_formatted("nordland-pnv", tmp_path / "from-npz")
    assert from_npz.digest == formatted.digest

    # 3. export to VDD (north = i * 25 / 10.5 m) and import it back under the protocol: the same
    out = export_dataset(formatted, "vdd", tmp_path / "vdd")[0].parent
    import_dataset(out, "vdd", "nordland-pnv", tmp_path / "from-vdd", registry)
    from_vdd = load_formatted("nordland-pnv", tmp_path / "from-vdd")
    assert [p.tolist() for p in from_vdd.positives] == [p.tolist() for p in formatted.positives]


def test_vdd_nordland_import_reads_frames_not_metres(tmp_path):
    # VDD download_nordland.py: north = format_coord(num_image * 25 / 10.5, 5, 1), east 0
    for split in ("database", "queries"):
        for i in range(100):
            north = f"{i * 25 / 10.5:07.1f}"
            touch_image(tmp_path / "vdd" / split / f"@0@{north}@@@@@{i}@@@@@@@@.jpg")
    registry = registry_with(tmp_path, "nordland-pnv", 100, 100)
    _, gt = import_dataset(tmp_path / "vdd", "vdd", "nordland-pnv", data_root(), registry)
    ds = load_formatted("nordland-pnv", data_root())
    # +/-10 frames (VDD's own 25 m), not +/-4 (10 m on 2.381 m frames)
    by_frame = {int(Path(p).name.split("@")[7]): i for i, p in enumerate(ds.queries)}
    db_frames = np.array([int(Path(p).name.split("@")[7]) for p in ds.database])
    assert sorted(db_frames[ds.positives[by_frame[50]]].tolist()) == list(range(40, 61))
    assert gt.positive_rule == "frame-window" and gt.threshold == 10
    # without a protocol, a VDD folder is UTM metres at VDD's 25 m: the same window here
    _, plain = import_dataset(tmp_path / "vdd", "vdd", "mine", data_root(), registry)
    assert [p.tolist() for p in plain.positives] == [p.tolist() for p in gt.positives]


def test_sped_batches_are_the_official_vdd_batches(shared_data, tmp_path):
    db = [str(x) for x in np.load(shared_data / "gsv-cities" / "SPED_dbImages.npy")]
    q = [str(x) for x in np.load(shared_data / "gsv-cities" / "SPED_qImages.npy")]
    for rel in db + q:
        (tmp_path / "img" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "img" / rel).touch()
    import_dataset(
        shared_data / "gsv-cities",
        "gsv-cities",
        "sped",
        data_root(),
        load_registry(),
        prefix="SPED",
        image_root=tmp_path / "img",
    )
    ds = load_formatted("sped", data_root())
    assert ds.manifest["batch_order"]["official"] is True
    # VDD download_sped.py names each image f"@0@{int(stem) * 1000}@@@@@{stem}@@@@@@@@.jpg" and the
    # official evaluation batches sorted(glob()), 3 at a time for D²-VPR (eval_encoder.py)
    vdd = sorted(
        (f"@0@{int(Path(p).stem) * 1000}@@@@@{Path(p).stem}@@@@@@@@.jpg", i)
        for i, p in enumerate(db)
    )
    official = [{i for _, i in vdd[b : b + 3]} for b in range(0, len(vdd), 3)]
    ours = ds.batch_order("database")
    batches = [set(ours[b : b + 3].tolist()) for b in range(0, len(ours), 3)]
    assert len(batches) == 203 and batches == official
    assert ds.batch_order("queries").tolist() == ours.tolist()  # pairs share names
    # batching in dataset order would share only 49 of the 203 official batches (the review's count)
    listed = {frozenset(range(b, min(b + 3, 607))) for b in range(0, 607, 3)}
    assert len(listed & {frozenset(b) for b in official}) == 49
    assert pair_name("0000100") == "@0@100000@@@@@0000100@@@@@@@@.jpg"


def test_msls_batch_order_sorts_vdd_names_across_both_cities(tmp_path):
    src = make_msls(tmp_path / "msls")
    # spread the images over real coordinates, in csv order unlike their easting order
    lat = {"cph": 55.68, "sf": 37.77}
    lon = {"cph": [12.59, 12.55, 12.50, 12.57], "sf": [-122.41, -122.45, -122.40, -122.43]}
    for city in ("cph", "sf"):
        for side in ("database", "query"):
            raw = pd.read_csv(src / "train_val" / city / side / "raw.csv", index_col=0)
            raw["lat"], raw["lon"] = lat[city], lon[city]
            raw.to_csv(src / "train_val" / city / side / "raw.csv")
    format_dataset("msls-val", src, data_root(), registry_with(tmp_path, "msls-val", 6, 2))
    ds = load_formatted("msls-val", data_root())
    keys = {"cph": ["d0", "d1", "d3"], "sf": ["d0", "d1", "d3"]}
    names = [
        msls_name_prefix(lat[c], lon[c][int(k[1])], f"{c}_{k}")
        for c in ("cph", "sf")
        for k in keys[c]
    ]
    assert ds.batch_order("database").tolist() == sorted(range(6), key=names.__getitem__)
    # cph's eastings (about 347 km in UTM 33) sort before sf's (about 550 km in UTM 10); within a
    # city, easting grows with longitude: d1 < d3 < d0 in both.
    assert [ds.database[i].split("/")[-1] for i in ds.batch_order("database")] == [
        "cph_d1.jpg", "cph_d3.jpg", "cph_d0.jpg", "sf_d1.jpg", "sf_d3.jpg", "sf_d0.jpg",
    ]  # fmt: skip
    assert ds.manifest["batch_order"]["official"] is True
    # without latitude and longitude (gsv-cities lists), the record says the order is not official
    for city in ("cph", "sf"):
        for side in ("database", "query"):
            raw = pd.read_csv(src / "train_val" / city / side / "raw.csv", index_col=0)
            raw.drop(columns=["lat"]).to_csv(src / "train_val" / city / side / "raw.csv")
    format_dataset("msls-val", src, tmp_path / "nolat", registry_with(tmp_path, "msls-val", 6, 2))
    plain = load_formatted("msls-val", tmp_path / "nolat")
    assert plain.manifest["batch_order"]["official"] is False
    assert plain.batch_order("database").tolist() == list(range(6))
