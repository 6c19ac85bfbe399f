"""The benchmarks of recent result tables: Tokyo 24/7, SF-XL's four query sets over one shared
database, SVOX, Eynsham, St Lucia, Baidu Mall. Their registry entries (counts checked against real
ground truth where ../shared/data has it), the shared-database rule, and the vdd formatter on
generated trees with VDD's file names."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tests.test_cli import one_line_error, run
from vprbench.datasets.formatters import FORMATTERS
from vprbench.datasets.protocols import count_text, load_registry, sharing_database
from vprbench.datasets.readers import read_pnv
from vprbench.errors import VPRBenchError

NEW = {  # name: (database, queries, radius in m, shared database)
    "tokyo247": (75984, 315, 25, None),
    "sf-xl-test-v1": (None, 1000, 25, "sf-xl-test-database"),
    "sf-xl-test-v2": (None, 598, 25, "sf-xl-test-database"),
    "sf-xl-night": (None, 466, 25, "sf-xl-test-database"),
    "sf-xl-occlusion": (None, 76, 25, "sf-xl-test-database"),
    # third-party counts of VDD's svox folders (datasets.yaml says so)
    **{f"svox-{c}": (17166, n, 25, "svox-gallery")
       for c, n in (("night", 823), ("overcast", 872), ("rain", 937), ("snow", 870), ("sun", 854))},
    "eynsham": (23935, None, 25, None),  # VDD download_eynsham.py: 4,787 panoramas x 5 tiles
    "st-lucia": (1549, 1464, 25, None),  # the EigenPlaces and AnyLoc papers' dataset tables agree
    "baidu-mall-10m": (None, None, 10, None),
}  # fmt: skip


def test_registry_entries():
    registry = load_registry()
    for name, (db, q, radius, shared) in NEW.items():
        p = registry[name]
        assert (p.database_count, p.queries_count, p.threshold, p.database_shared) == (
            db, q, radius, shared
        ), name  # fmt: skip
        assert p.positive_rule == "utm-radius" and p.unit == "m"
        assert p.formatter == ("tokyo247" if name == "tokyo247" else "vdd")
        assert p.licence and p.obtain and p.gt_source
    assert sharing_database(registry["sf-xl-night"], registry) == [
        "sf-xl-test-v1", "sf-xl-test-v2", "sf-xl-occlusion"
    ]  # fmt: skip
    assert sharing_database(registry["tokyo247"], registry) == []
    assert "shorter side of 480" in registry["tokyo247"].image_rule


def test_tokyo247_counts_are_those_of_the_real_ground_truth(shared_data, tmp_path):
    """Patch-NetVLAD's tokyo247.npz (the NetVLAD evaluation's split): 315 queries, 75,984 database
    images, 25 m; every query has a positive."""
    p = load_registry()["tokyo247"]
    npz = shared_data / "patchnetvlad" / "tokyo247.npz"
    db, q = tmp_path / "db.txt", tmp_path / "q.txt"
    db.write_text("\n".join(f"db/{i:06d}.png" for i in range(p.database_count)))
    q.write_text("\n".join(f"q/{i:03d}.jpg" for i in range(p.queries_count)))
    gt = read_pnv(npz, db, q)  # refuses lists of another length than the file's
    assert (len(gt.database), len(gt.queries), gt.threshold) == (75984, 315, p.threshold)
    assert gt.num_without_positives == 0
    utm = np.load(npz)
    d = np.linalg.norm(utm["utmDb"] - utm["utmQ"][200], axis=1)  # one query by brute force
    assert gt.positives[200].tolist() == np.flatnonzero(d <= 25).tolist()


def test_a_shared_database_must_be_the_same_in_every_protocol(tmp_path):
    registry = tmp_path / "datasets.yaml"
    entry = """  {name}:
    description: d
    database: {{count: {count}, shared: city, layout: "test/database"}}
    queries: {{count: 2, layout: "test/{name}"}}
    ground_truth: {{source: s, formats: [vdd]}}
    positive: {{rule: utm-radius, threshold: 25, unit: m}}
    licence: l
    obtain: o
"""
    registry.write_text(
        "protocols:\n" + entry.format(name="a", count=5) + entry.format(name="b", count=6)
    )
    with pytest.raises(VPRBenchError, match=r"protocols.b.database: shared database 'city' is 5 "
                                            r"images \(test/database\) in protocols.a, but 6"):  # fmt: skip
        load_registry(registry)
    registry.write_text(
        "protocols:\n" + entry.format(name="a", count=5) + entry.format(name="b", count=5)
    )
    assert sharing_database(load_registry(registry)["b"], load_registry(registry)) == ["a"]


def vdd_name(east: float, north: float, stem: str) -> str:
    """util.get_dst_image_name of VDD: @east@north@zone@letter@lat@lon@pano@tile@...@.jpg"""
    return f"@{east:.2f}@{north:.2f}@10@S@37.77000@-122.41000@{stem}@@@@@@@@.jpg"


def make_tree(root, database, query_sets):
    """Write tiny images under VDD file names: ``database`` and each query set are [(east, north)]."""
    for folder, points in {"database": database, **query_sets}.items():
        (root / folder).mkdir(parents=True)
        for i, (east, north) in enumerate(points):
            Image.new("RGB", (4, 4), (i, 0, 0)).save(
                root / folder / vdd_name(east, north, f"{i:04d}")
            )


def test_vdd_formatter_on_a_shared_sf_xl_tree(tmp_path, capsys, monkeypatch, isolated_dirs):
    """SF-XL's layout (FoL README: SF_XL/test/database beside queries_v1, queries_v2, queries_night,
    queries_occlusion): each query set formats against the same database folder."""
    test = tmp_path / "SF_XL" / "test"
    database = [(550000.0, 4180000.0), (550010.0, 4180000.0), (550100.0, 4180000.0)]
    make_tree(test, database, {"queries_night": [(550004.0, 4180003.0), (550200.0, 4180000.0)],
                               "queries_occlusion": [(550100.0, 4180025.0)]})  # fmt: skip
    registry = load_registry()
    gt = FORMATTERS["vdd"](
        tmp_path / "SF_XL", registry["sf-xl-night"], ["test/database", "test/queries_night"]
    )
    assert gt.image_root == test
    assert [d.split("@")[1] for d in gt.database] == ["550000.00", "550010.00", "550100.00"]
    assert all(q.startswith("queries_night/") for q in gt.queries)
    # 5 m and 10.8 m from the first two; the second query has none within 25 m
    assert [x.tolist() for x in gt.positives] == [[0, 1], []]
    occl = FORMATTERS["vdd"](
        tmp_path, registry["sf-xl-occlusion"], ["test/database", "test/queries_occlusion"]
    )
    assert occl.database == gt.database and [x.tolist() for x in occl.positives] == [
        [2]
    ]  # 25 m: inclusive
    # the registry asserts the published query count: 2 night queries are not SF-XL night's 466
    code, _, err = run(["datasets", "format", "sf-xl-night", "--from", str(tmp_path / "SF_XL")],
                       capsys, monkeypatch)  # fmt: skip
    assert code == 1
    assert "2 queries images, but protocol 'sf-xl-night' expects 466" in one_line_error(err)


def test_request_only_sets_say_how_to_get_them(capsys, monkeypatch, isolated_dirs):
    code, _, err = run(["datasets", "download", "sf-xl-night"], capsys, monkeypatch)
    line = one_line_error(err)
    assert code == 1 and "'sf-xl-night' cannot be downloaded by vprbench" in line
    assert line.endswith("then `vprbench datasets format sf-xl-night --from SF_XL`")  # said once


def test_vdd_formatter_names_a_missing_folder(tmp_path):
    p = load_registry()["svox-rain"]
    (tmp_path / "svox" / "images" / "test" / "gallery").mkdir(parents=True)
    with pytest.raises(VPRBenchError, match=r"missing folder images/test/queries_rain/"):
        FORMATTERS["vdd"](tmp_path, p, list(p.source_files))


def test_datasets_info_shows_the_image_rule_and_the_shared_database(
    capsys, monkeypatch, isolated_dirs
):
    code, out, _ = run(["datasets", "info", "tokyo247"], capsys, monkeypatch)
    flat = " ".join(out.replace("│", " ").split())  # the table's wrapped cells, joined
    assert code == 0 and "shorter side of 480 px" in flat and "75,984" in flat
    code, out, _ = run(["datasets", "info", "svox-sun"], capsys, monkeypatch)
    flat = " ".join(out.replace("│", " ").split())  # the table's wrapped cells, joined
    assert "17,166" in flat and "shared database 'svox-gallery'" in flat
    assert "svox-night, svox-overcast, svox-rain, svox-snow" in flat
    # a count that is not asserted shows what papers and logs report, with the source
    code, out, _ = run(["datasets", "info", "sf-xl-occlusion"], capsys, monkeypatch)
    flat = " ".join(out.replace("│", " ").split())
    assert "not asserted; reported: about 2.8 M" in flat and "2,805,840 and 2,588,640" in flat
    code, out, _ = run(["datasets", "info", "eynsham"], capsys, monkeypatch)
    flat = " ".join(out.replace("│", " ").split())
    assert "23,935" in flat and "not asserted; reported: about 24k (EigenPlaces" in flat


def test_a_shared_database_says_the_same_reported_count_everywhere(tmp_path):
    registry = tmp_path / "datasets.yaml"
    entry = """  {name}:
    description: d
    database: {{count: null, shared: city, layout: "test/database", reported: "{reported}"}}
    queries: {{count: 2, layout: "test/{name}"}}
    ground_truth: {{source: s, formats: [vdd]}}
    positive: {{rule: utm-radius, threshold: 25, unit: m}}
    licence: l
    obtain: o
"""
    registry.write_text("protocols:\n" + entry.format(name="a", reported="about 5")
                        + entry.format(name="b", reported="about 6"))  # fmt: skip
    with pytest.raises(VPRBenchError, match=r"protocols.b.database: shared database 'city' is not "
                       r"asserted; reported: about 5 images \(test/database\) in protocols.a, but "
                       r"not asserted; reported: about 6 images"):  # fmt: skip
        load_registry(registry)
    registry.write_text("protocols:\n" + entry.format(name="a", reported=" ")
                        + entry.format(name="b", reported=" "))  # fmt: skip
    with pytest.raises(VPRBenchError, match="protocols.a.database: field 'reported' must say what"):
        load_registry(registry)


def test_a_reported_count_is_only_for_a_count_that_is_not_asserted(tmp_path):
    registry = tmp_path / "datasets.yaml"
    entry = """protocols:
  a:
    description: d
    database: {{count: {count}, layout: "test/database", reported: about 5 (a paper)}}
    queries: {{count: 2, layout: "test/queries"}}
    ground_truth: {{source: s, formats: [vdd]}}
    positive: {{rule: utm-radius, threshold: 25, unit: m}}
    licence: l
    obtain: o
"""
    registry.write_text(entry.format(count=5))
    with pytest.raises(VPRBenchError, match=r"protocols.a.database: field 'reported' is for a count "
                                            r"that is not asserted \(count: null\); this count is "
                                            r"asserted \(5\)"):  # fmt: skip
        load_registry(registry)
    registry.write_text(entry.format(count="null"))
    p = load_registry(registry)["a"]
    assert (p.database_count, p.database_reported) == (None, "about 5 (a paper)")
    assert count_text(p.database_count, p.database_reported) == (
        "not asserted; reported: about 5 (a paper)"
    )
    assert count_text(p.queries_count, p.queries_reported) == "2"


def make_tokyo_raw(root):
    """The authors' files as VDD format_tokyo247.py expects them: datasets/tokyo247.mat (dbStruct:
    .jpg names of .png cutouts, utmDb in zone 54S) and tokyo247/<folder>/ cutouts, with the queries
    tokyo247/247query_subset_v2/NNNNN.jpg beside NNNNN.csv (id, latitude, longitude)."""
    import utm
    from scipy.io import savemat

    names = [f"0381{4 + i // 2}/0381{4 + i // 2}{i:017d}_012_{30 * i:03d}.jpg" for i in range(4)]
    utm_db = [(385000.0 + 30 * i, 3949000.0) for i in range(4)]
    for i, name in enumerate(names):
        path = root / "tokyo247" / name.replace(".jpg", ".png")
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 6), (40 * i, 0, 0)).save(path)
    cell = np.array([[n] for n in names], dtype=object)
    (root / "datasets").mkdir(parents=True)
    savemat(root / "datasets" / "tokyo247.mat",
            {"dbStruct": {"whichSet": "test", "dbImageFns": cell, "utmDb": np.array(utm_db).T}})  # fmt: skip
    queries = root / "tokyo247" / "247query_subset_v2"
    queries.mkdir()
    rng = np.random.default_rng(1)
    # 1 m from db 0; 15 m from db 1 and db 2; far from all
    for i, ((east, north), size) in enumerate(
        zip([(385001.0, 3949000.0), (385045.0, 3949000.0), (386000.0, 3949000.0)],
            [(800, 600), (600, 1000), (640, 480)], strict=True)
    ):  # fmt: skip
        lat, lon = utm.to_latlon(east, north, 54, "S")
        pixels = rng.integers(0, 256, (size[1], size[0], 3)).astype(np.uint8)
        Image.fromarray(pixels).save(queries / f"{i:05d}.jpg", quality=95)
        (queries / f"{i:05d}.csv").write_text(f"{i:05d},{lat:.8f},{lon:.8f},0,0\n")
    return root


def test_tokyo247_from_the_authors_files_as_vdd_formats_it(tmp_path, capsys, monkeypatch):
    import io

    import torchvision

    raw = make_tokyo_raw(tmp_path / "raw_data")
    gt = FORMATTERS["tokyo247"](raw, load_registry()["tokyo247"], [])
    assert gt.image_root == raw / "tokyo247" and gt.source_format == "tokyo247-raw"
    assert gt.database[0] == "database_jpeg/03814/0381400000000000000000_012_000.jpg"
    # each cutout as VDD saves it: the PNG re-saved under a .jpg name (JPEG at PIL's default quality)
    for name in gt.database:
        png = raw / "tokyo247" / name.removeprefix("database_jpeg/").replace(".jpg", ".png")
        official = io.BytesIO()
        Image.open(png).save(official, format="JPEG")
        assert (raw / "tokyo247" / name).read_bytes() == official.getvalue(), name
    assert gt.queries == [f"247query_subset_v2_480/{i:05d}.jpg" for i in range(3)]
    assert [p.tolist() for p in gt.positives] == [[0], [1, 2], []]
    # VDD's names: UTM back from latitude/longitude, to the centimetre; pano id and tile 0-11
    assert gt.vdd_names["database"][3].startswith("@0385090.00@3949000.00@54@S@")
    assert gt.vdd_names["database"][3].endswith("@0381500000000000000003@03@")
    assert gt.vdd_names["queries"][0].startswith("@0385001.00@3949000.00@54@S@")
    # each query as VDD makes it: torchvision Resize(480) on the PIL image, saved as JPEG (quality 75)
    for i, size in enumerate([(640, 480), (480, 800), (640, 480)]):
        source = Image.open(raw / "tokyo247" / "247query_subset_v2" / f"{i:05d}.jpg")
        made = raw / "tokyo247" / gt.queries[i]
        assert Image.open(made).size == size
        official = io.BytesIO()
        torchvision.transforms.Resize(480)(source).save(official, format="JPEG")
        assert made.read_bytes() == official.getvalue(), i
    # formatting again keeps the resized files (the cache key stays)
    stamp = (raw / "tokyo247" / gt.queries[0]).stat().st_mtime_ns
    FORMATTERS["tokyo247"](raw, load_registry()["tokyo247"], [])
    assert (raw / "tokyo247" / gt.queries[0]).stat().st_mtime_ns == stamp
    # through the command: the registry's counts are the real set's
    code, _, err = run(["datasets", "format", "tokyo247", "--from", str(raw)], capsys, monkeypatch)
    assert code == 1
    assert "4 database images, but protocol 'tokyo247' expects 75984" in one_line_error(err)
    # a cutout the .mat names but the folders lack is named
    next((raw / "tokyo247" / "03815").glob("*.png")).unlink()
    with pytest.raises(
        VPRBenchError, match=r"1 cutout\(s\) named by .*tokyo247.mat missing: 03815/"
    ):
        FORMATTERS["tokyo247"](raw, load_registry()["tokyo247"], [])


def test_tokyo247_raw_names_a_bad_query_csv(tmp_path):
    raw = make_tokyo_raw(tmp_path / "raw_data")
    (raw / "tokyo247" / "247query_subset_v2" / "00001.csv").write_text("00001;35.6;139.7\n")
    with pytest.raises(VPRBenchError, match=r"00001.csv: expected a first line 'id,latitude"):
        FORMATTERS["tokyo247"](raw, load_registry()["tokyo247"], [])


def test_tokyo247_from_a_vdd_tree(tmp_path):
    p = load_registry()["tokyo247"]
    make_tree(tmp_path / "tokyo247" / "images" / "test", [(385000.0, 3949000.0)],
              {"queries": [(385010.0, 3949000.0)]})  # fmt: skip
    gt = FORMATTERS["tokyo247"](tmp_path / "tokyo247", p, list(p.source_files))
    assert gt.source_format == "vdd" and [x.tolist() for x in gt.positives] == [[0]]
