"""`datasets format/download/export` on small synthetic copies of each official raw layout (same file
names, columns and .mat structure, made here), and downloads from a server on 127.0.0.1."""

import hashlib
import io
import json
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image
from scipy.io import savemat

from tests.conftest import make_vpr_bench_folder
from tests.test_download import Handler, server  # noqa: F401  (fixture)
from vprbench.datasets.export import export_dataset
from vprbench.datasets.formatted import load_formatted
from vprbench.datasets.formatters import FORMATTERS
from vprbench.datasets.manage import download_dataset, format_dataset
from vprbench.datasets.protocols import FORMATTER_NAMES, default_registry_path, load_registry
from vprbench.datasets.readers import read_gsv_cities, read_vdd
from vprbench.errors import VPRBenchError
from vprbench.paths import data_root


def registry_with(tmp_path, name, n_db, n_q, downloads=None):
    """The real registry, with the counts (and optionally the download block) of ``name`` replaced."""
    raw = yaml.safe_load(default_registry_path().read_text())
    entry = raw["protocols"][name]
    entry["database"]["count"], entry["queries"]["count"] = n_db, n_q
    if downloads is not None:
        entry["source"]["download"] = downloads
    path = tmp_path / "datasets.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_registry(path)


def touch_image(path, value=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), value, dtype=np.uint8)).save(path)


def test_every_formatter_name_is_registered():
    assert set(FORMATTERS) == set(FORMATTER_NAMES)


def make_pitts(root, n_panos=3):
    """NetVLAD layout: pitts30k_test.mat (dbStruct) + 000/ database and queries_real/000/ images.
    Panoramas lie 20 m apart on a line; each gives 2 database cutouts and 1 query."""
    db, q, utm_db, utm_q = [], [], [], []
    for p in range(n_panos):
        east = 584000.0 + 20 * p
        for yaw in (1, 2):
            db.append(f"000/{p:06d}_pitch1_yaw{yaw}.jpg")
            utm_db.append((east, 4476000.0))
        q.append(f"000/{p:06d}_pitch1_yaw1.jpg")
        utm_q.append((east + 3, 4476000.0))
    for name in db:
        touch_image(root / name)
    for name in q:
        touch_image(root / "queries_real" / name)
    cell = lambda names: np.array([[n] for n in names], dtype=object)  # noqa: E731
    struct = {
        "whichSet": "test",
        "dbImageFns": cell(db),
        "utmDb": np.array(utm_db).T,
        "qImageFns": cell(q),
        "utmQ": np.array(utm_q).T,
        "numImages": len(db),
        "numQueries": len(q),
        "posDistThr": 25,
        "posDistSqThr": 625,
        "nonTrivPosDistSqThr": 100,
    }
    (root / "datasets").mkdir(parents=True, exist_ok=True)
    savemat(root / "datasets" / "pitts30k_test.mat", {"dbStruct": struct})
    return root


def test_format_pitts30k_from_netvlad_mat(tmp_path):
    src = make_pitts(tmp_path / "Pittsburgh")
    registry = registry_with(tmp_path, "pitts30k-test", 6, 3)
    out, gt = format_dataset("pitts30k-test", src, data_root(), registry)
    ds = load_formatted("pitts30k-test", data_root())
    assert ds.queries[0] == "queries_real/000/000000_pitch1_yaw1.jpg"
    # query p (3 m east of panorama p) reaches panoramas within 25 m: p-1, p, p+1 (20 m apart)
    assert [p.tolist() for p in ds.positives] == [[0, 1, 2, 3], [0, 1, 2, 3, 4, 5], [2, 3, 4, 5]]
    # the real registry asserts the real counts
    with pytest.raises(
        VPRBenchError, match="6 database images, but protocol 'pitts30k-test' expects 10000"
    ):
        format_dataset("pitts30k-test", src, tmp_path / "other", load_registry())
    (src / "queries_real/000/000002_pitch1_yaw1.jpg").unlink()
    with pytest.raises(
        VPRBenchError, match=r"1 image\(s\) missing: queries_real/000/000002_pitch1_yaw1.jpg"
    ):
        format_dataset("pitts30k-test", src, tmp_path / "other", registry)
    assert not (tmp_path / "other").exists() or not any((tmp_path / "other").iterdir())


def make_msls(root, cities=("cph", "sf")):
    """mapillary_sls layout per city: postprocessed.csv, raw.csv, subtask_index.csv per side."""
    rows = {  # side: (keys, easting offsets, pano flags, subtask 'all' flags)
        "database": (
            ["d0", "d1", "d2", "d3"],
            [0, 10, 500, 1000],
            [False, False, True, False],
            [1, 1, 1, 1],
        ),
        "query": (
            ["q0", "q1", "q2", "q3"],
            [2, 600, 1001, 3],
            [False, False, False, True],
            [1, 1, 0, 1],
        ),
    }
    for city in cities:
        for side, (keys, east, pano, subtask) in rows.items():
            folder = root / "train_val" / city / side
            folder.mkdir(parents=True)
            keys = [f"{city}_{k}" for k in keys]
            pd.DataFrame({"key": keys, "easting": [350000.0 + e for e in east],
                          "northing": [6180000.0] * 4, "night": False}).to_csv(folder / "postprocessed.csv")  # fmt: skip
            pd.DataFrame({"key": keys, "lon": 12.5, "lat": 55.6, "pano": pano}).to_csv(
                folder / "raw.csv"
            )
            pd.DataFrame({"key": keys, "all": [bool(a) for a in subtask], "s2w": False}).to_csv(
                folder / "subtask_index.csv"
            )
            for key in keys:
                touch_image(folder / "images" / f"{key}.jpg")
    return root


def test_format_msls_val_and_full(tmp_path):
    src = make_msls(tmp_path / "msls")
    # per city: database keeps d0, d1, d3 (d2 is a panorama); msls-val queries: q0 (2 m from d0, 8 m
    # from d1) and q1 (no positive, dropped); q2 not in subtask 'all'; q3 is a panorama.
    out, gt = format_dataset(
        "msls-val", src, data_root(), registry_with(tmp_path, "msls-val", 6, 2)
    )
    ds = load_formatted("msls-val", data_root())
    assert ds.database[:3] == [f"train_val/cph/database/images/cph_d{i}.jpg" for i in (0, 1, 3)]
    assert ds.queries == [
        "train_val/cph/query/images/cph_q0.jpg",
        "train_val/sf/query/images/sf_q0.jpg",
    ]
    assert [p.tolist() for p in ds.positives] == [[0, 1], [3, 4]]
    assert gt.notes == ["2 queries without a positive within 25 m dropped"]
    # msls-val-full keeps every non-panorama query, with or without a positive, and no subtask filter
    format_dataset(
        "msls-val-full", src, data_root(), registry_with(tmp_path, "msls-val-full", 6, 6)
    )
    full = load_formatted("msls-val-full", data_root())
    assert [p.tolist() for p in full.positives] == [[0, 1], [], [2], [3, 4], [], [5]]
    (src / "train_val/sf/query/raw.csv").unlink()
    with pytest.raises(VPRBenchError, match=r"train_val/sf/query: missing raw.csv"):
        format_dataset("msls-val", src, data_root(), registry_with(tmp_path, "msls-val", 6, 2))


def make_nordland_pnv(root, n=30):
    names = [f"images-{i:05d}.png" for i in range(100, 100 + n)]
    for season in ("summer", "winter"):
        for i, name in enumerate(names):
            touch_image(root / season / name, i)
    (root / "cleanImageNames.txt").write_text("\n".join(names[:25]) + "\n")  # 5 frames cleaned out
    return root


def test_format_nordland_pnv_and_export_roundtrip(tmp_path):
    src = make_nordland_pnv(tmp_path / "pnv")
    format_dataset(
        "nordland-pnv", src, data_root(), registry_with(tmp_path, "nordland-pnv", 25, 25)
    )
    ds = load_formatted("nordland-pnv", data_root())
    assert (
        ds.database[0] == "summer/images-00100.png" and ds.queries[0] == "winter/images-00100.png"
    )
    assert ds.positives[12].tolist() == list(range(2, 23)) and ds.positives[0].tolist() == list(
        range(11)
    )
    # export to VDD and read it back with the VDD reader at 25 m: the same +/-10 frame positives
    out = export_dataset(ds, "vdd", tmp_path / "vdd")[0].parent
    back = read_vdd(out, threshold=25)
    assert [p.tolist() for p in back.positives] == [p.tolist() for p in ds.positives]
    assert (out / "database" / back.database[0].split("/", 1)[1]).resolve() == ds.image_path(
        ds.database[0]
    )
    # and to gsv-cities
    export_dataset(ds, "gsv-cities", tmp_path / "gsv")
    gsv = read_gsv_cities(tmp_path / "gsv", image_root=ds.image_root)
    assert gsv.database == ds.database and all(
        np.array_equal(a, b) for a, b in zip(gsv.positives, ds.positives, strict=True)
    )


def test_export_vdd_of_utm_dataset_roundtrips(tmp_path):
    src = make_pitts(tmp_path / "Pittsburgh", n_panos=4)
    format_dataset(
        "pitts30k-test", src, data_root(), registry_with(tmp_path, "pitts30k-test", 8, 4)
    )
    ds = load_formatted("pitts30k-test", data_root())
    out = export_dataset(ds, "vdd", tmp_path / "vdd")[0].parent
    back = read_vdd(out, threshold=25)
    # VDD sorts file names; map back through the pano ids to compare positives
    order_db = [int(n.split("@")[7][2:]) for n in back.database]
    order_q = [int(n.split("@")[7][1:]) for n in back.queries]
    for j, pos in zip(order_q, back.positives, strict=True):
        assert sorted(order_db[i] for i in pos) == ds.positives[j].tolist()


def test_explicit_positives_cannot_go_to_vdd(tmp_path):
    from vprbench.datasets.manage import import_dataset

    src = make_vpr_bench_folder(tmp_path / "vb", 4, [[0, 1], [2]])
    import_dataset(src, "vpr-bench", "x", data_root(), load_registry())
    with pytest.raises(VPRBenchError, match="export it --to gsv-cities"):
        export_dataset(load_formatted("x", data_root()), "vdd", tmp_path / "out")


def make_amstertime(root, n=12):
    """AmsterTime as released (VDD download_amstertime.py): new/NNNN.png database, old/NNNN.jpg
    queries, paired by stem."""
    for i in range(n):
        touch_image(root / "new" / f"{i:04d}.png", i)
        touch_image(root / "old" / f"{i:04d}.jpg", i)
    return root


def test_format_amstertime_pairs_on_the_stem(tmp_path):
    src = make_amstertime(tmp_path / "AmsterTime")
    format_dataset("amstertime", src, data_root(), load_registry())
    ds = load_formatted("amstertime", data_root())
    assert ds.database[:2] == ["new/0000.png", "new/0001.png"] and ds.queries[1] == "old/0001.jpg"
    assert [p.tolist() for p in ds.positives] == [[i] for i in range(12)]
    # VDD names pair i '@0@{i*1000}@...' (unpadded): sorted, 0, 10, 1, 11, 2, ...
    assert ds.batch_order("queries").tolist()[:4] == [0, 10, 1, 11]
    (src / "old" / "0011.jpg").unlink()
    with pytest.raises(VPRBenchError, match="unmatched stems: 0011"):
        format_dataset("amstertime", src, data_root(), load_registry())


def test_download_amstertime_unpacks_the_zip_inside_the_zip(server, tmp_path):  # noqa: F811
    src = make_amstertime(tmp_path / "src", n=3)
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as z:
        for path in sorted(src.rglob("*.*")):
            z.write(path, path.relative_to(src))
    outer = io.BytesIO()
    with zipfile.ZipFile(outer, "w") as z:
        z.writestr("AmsterTime-v1.0.zip", inner.getvalue())
    Handler.FILES["/versions/4"] = outer.getvalue()
    downloads = [{"name": "AmsterTime.zip", "mirrors": [f"{server}/versions/4"], "sha256": None}]
    registry = registry_with(tmp_path, "amstertime", None, None, downloads)
    download_dataset("amstertime", data_root(), registry)
    ds = load_formatted("amstertime", data_root())
    assert ds.queries == ["old/0000.jpg", "old/0001.jpg", "old/0002.jpg"]
    assert not list(Path(ds.image_root).glob("*.zip"))


def test_download_nordland_pnv_puts_each_season_in_its_folder(server, tmp_path):  # noqa: F811
    names = [f"images-{i:05d}.png" for i in range(202, 214)]
    src = tmp_path / "src"
    for season in ("summer", "winter"):
        for i, name in enumerate(names):
            touch_image(src / season / name, i)

    def tar_of(folder, arcroot):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as t:
            for path in sorted(folder.iterdir()):
                t.add(path, f"{arcroot}{path.name}")
        return buf.getvalue()

    # summer.tar.gz holds summer/...; winter.tar.gz (VDD's Box file) holds the images at its root
    Handler.FILES["/summer"] = tar_of(src / "summer", "summer/")
    Handler.FILES["/winter"] = tar_of(src / "winter", "")
    Handler.FILES["/names"] = ("\n".join(names) + "\n").encode()
    registry = registry_with(tmp_path, "nordland-pnv", 12, 12)
    spec = {a["name"]: a for a in registry["nordland-pnv"].downloads}
    assert spec["winter.tar.gz"]["target"] == "winter" and all(
        "adelaideuniversity.app.box.com" in m for a in spec.values() for m in a["mirrors"]
    )
    downloads = [
        {"name": "summer.tar.gz", "mirrors": [f"{server}/summer"], "sha256": None},
        {"name": "winter.tar.gz", "mirrors": [f"{server}/winter"], "sha256": None, "target": "winter"},
        {"name": "cleanImageNames.txt", "mirrors": [f"{server}/names"], "sha256": None, "extract": False},
    ]  # fmt: skip
    download_dataset(
        "nordland-pnv", data_root(), registry_with(tmp_path, "nordland-pnv", 12, 12, downloads)
    )
    ds = load_formatted("nordland-pnv", data_root())
    assert ds.queries[0] == "winter/images-00202.png" and ds.image_path(ds.queries[-1]).is_file()
    # an archive that does have a top-level winter/ ends in the same place
    Handler.FILES["/winter"] = tar_of(src / "winter", "winter/")
    fresh = tmp_path / "fresh"
    download_dataset(
        "nordland-pnv", fresh, registry_with(tmp_path, "nordland-pnv", 12, 12, downloads)
    )
    assert load_formatted("nordland-pnv", fresh).image_path("winter/images-00213.png").is_file()


def test_a_bad_archive_is_never_kept(server, tmp_path):  # noqa: F811
    # An expired link answers 200 with an HTML page: not kept under the final name, next mirror tried.
    Handler.FILES["/expired"] = b"<!DOCTYPE html><html>link expired</html>"
    Handler.FILES["/good"] = zipped_vpr_bench(tmp_path, n=4)
    downloads = [{"name": "SPEDTEST.zip", "mirrors": [f"{server}/expired"], "sha256": None}]
    with pytest.raises(VPRBenchError, match="not a zip or tar archive .*DOCTYPE"):
        download_dataset("sped", data_root(), registry_with(tmp_path, "sped", 4, 4, downloads))
    assert not (data_root() / "_raw" / "sped" / "archives" / "SPEDTEST.zip").exists()
    downloads[0]["mirrors"] = [f"{server}/expired", f"{server}/good"]
    out, gt, reports = download_dataset(
        "sped", data_root(), registry_with(tmp_path, "sped", 4, 4, downloads)
    )
    assert len(gt.database) == 4 and "not a zip or tar" in reports[0].failures[0]
    # the digest seen is recorded; a file damaged later is detected and fetched again
    archive = reports[0].path
    recorded = json.loads(archive.with_name("SPEDTEST.zip.sha256").read_text())
    assert recorded["sha256"] == reports[0].sha256 and recorded["url"].endswith("/good")
    archive.write_bytes(archive.read_bytes()[:-20])
    Handler.LOG.clear()
    download_dataset("sped", data_root(), registry_with(tmp_path, "sped", 4, 4, downloads))
    assert ("/good", None) in Handler.LOG and archive.read_bytes() == Handler.FILES["/good"]
    # a truncated zip is caught before it is kept; a truncated tar.gz (its first member readable)
    # fails to unpack, and is then deleted so that the next run downloads it again
    Handler.FILES["/short"] = Handler.FILES["/good"][: len(Handler.FILES["/good"]) // 2]
    downloads[0].update(name="SHORT.zip", mirrors=[f"{server}/short"])
    with pytest.raises(VPRBenchError, match="SHORT.zip: .*not a zip or tar archive"):
        download_dataset("sped", tmp_path / "x", registry_with(tmp_path, "sped", 4, 4, downloads))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        t.add(tmp_path / "SPEDTEST", "SPEDTEST")
    Handler.FILES["/short.tgz"] = buf.getvalue()[: len(buf.getvalue()) * 2 // 3]
    downloads[0].update(name="SHORT.tar.gz", mirrors=[f"{server}/short.tgz"])
    with pytest.raises(VPRBenchError, match="damaged archive .*deleted it, run the download again"):
        download_dataset("sped", tmp_path / "x", registry_with(tmp_path, "sped", 4, 4, downloads))
    assert not list((tmp_path / "x" / "_raw" / "sped" / "archives").glob("SHORT.tar.gz*"))


def zipped_vpr_bench(tmp_path, n=5):
    folder = make_vpr_bench_folder(tmp_path / "SPEDTEST", n, [[i] for i in range(n)])
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                z.write(path, path.relative_to(tmp_path))
    return buf.getvalue()


def test_download_sped_from_mirrors(server, tmp_path):  # noqa: F811
    data = zipped_vpr_bench(tmp_path)
    Handler.FILES["/mirror2/SPEDTEST.zip"] = data
    Handler.FILES["/mirror2/SPEDTEST.zip.bad"] = data[:-10]
    digest = hashlib.sha256(data).hexdigest()
    downloads = [{"name": "SPEDTEST.zip", "sha256": digest,
                  "mirrors": [f"{server}/down/SPEDTEST.zip", f"{server}/mirror2/SPEDTEST.zip"]}]  # fmt: skip
    registry = registry_with(tmp_path, "sped", 5, 5, downloads)
    out, gt, reports = download_dataset("sped", data_root(), registry)
    assert reports[0].verified and "HTTP 404" in reports[0].failures[0]
    ds = load_formatted("sped", data_root())
    assert len(ds.database) == 5 and [p.tolist() for p in ds.positives] == [[i] for i in range(5)]
    assert ds.image_path(ds.database[0]).is_file()
    # a wrong checksum everywhere: a clear error, and nothing formatted
    downloads[0]["mirrors"] = [f"{server}/mirror2/SPEDTEST.zip.bad"]
    downloads[0]["name"] = "SPED2.zip"
    with pytest.raises(VPRBenchError, match="could not download SPED2.zip: .*sha256"):
        download_dataset(
            "sped", tmp_path / "fresh", registry_with(tmp_path, "sped", 5, 5, downloads)
        )
    assert not (tmp_path / "fresh" / "sped").exists()


def test_download_of_a_request_only_dataset_says_how():
    with pytest.raises(
        VPRBenchError,
        match=r"'pitts30k-test' cannot be downloaded by vprbench: .*netvlad.*datasets format pitts30k-test --from PATH",
    ):
        download_dataset("pitts30k-test", data_root(), load_registry())


def test_download_msls_sample_reads_its_city(server, tmp_path):  # noqa: F811
    src = make_msls(tmp_path / "MSLS_sample", cities=("zurich",))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for path in sorted(src.rglob("*")):
            if path.is_file():
                z.write(path, path.relative_to(src))
    Handler.FILES["/MSLS_samples.zip"] = buf.getvalue()
    downloads = [
        {"name": "MSLS_samples.zip", "mirrors": [f"{server}/MSLS_samples.zip"], "sha256": None}
    ]
    out, gt, reports = download_dataset(
        "msls-sample", data_root(), registry_with(tmp_path, "msls-sample", None, None, downloads)
    )
    assert not reports[0].verified and len(reports[0].sha256) == 64
    ds = load_formatted("msls-sample", data_root())
    assert ds.queries == ["train_val/zurich/query/images/zurich_q0.jpg"] and ds.positives[
        0
    ].tolist() == [0, 1]


def make_msls_test(root, with_gt):
    """mapillary_sls test layout for two cities; subtask_index.csv and, optionally, released UTM."""
    for city, east in (("miami", 0.0), ("athens", 9000.0)):
        for side, keys, offsets, flags in (
            ("database", ["d0", "d1", "d2"], [0, 100, 200], [True, True, False]),
            ("query", ["q0", "q1"], [5, 150], [True, True]),
        ):
            folder = root / "test" / city / side
            folder.mkdir(parents=True)
            keys = [f"{city}_{k}" for k in keys]
            pd.DataFrame({"key": keys, "all": flags}).to_csv(folder / "subtask_index.csv")
            if with_gt:
                pd.DataFrame(
                    {"key": keys, "easting": [east + o for o in offsets], "northing": 0.0}
                ).to_csv(folder / "postprocessed.csv")
            for i, key in enumerate(keys):
                touch_image(
                    folder / "images" / f"{key}.jpg", 40 * i + (100 if city == "athens" else 0)
                )
    return root


def challenge_registry(tmp_path):
    """msls-challenge with two cities and 4 / 4 images, written to tmp_path/datasets.yaml."""
    registry_with(tmp_path, "msls-challenge", 4, 4)
    raw = yaml.safe_load((tmp_path / "datasets.yaml").read_text())
    raw["protocols"]["msls-challenge"]["source"]["cities"] = ["miami", "athens"]
    (tmp_path / "datasets.yaml").write_text(yaml.safe_dump(raw))
    return load_registry(tmp_path / "datasets.yaml")


def format_both_challenge_copies(tmp_path):
    registry = challenge_registry(tmp_path)
    src = make_msls_test(tmp_path / "msls_gt", with_gt=True)
    out, gt = format_dataset("msls-challenge", src, data_root(), registry)
    ds = load_formatted("msls-challenge", data_root())
    assert ds.database == [
        f"test/{c}/database/images/{c}_d{i}.jpg" for c in ("miami", "athens") for i in (0, 1)
    ]
    assert [p.tolist() for p in ds.positives] == [[0], [], [2], []]  # q1 is 50 m from d1
    from vprbench.datasets.formatted import load_groups

    assert load_groups(ds)["queries"].tolist() == ["miami", "miami", "athens", "athens"]
    src2 = make_msls_test(tmp_path / "msls_nogt", with_gt=False)
    out, gt = format_dataset("msls-challenge", src2, tmp_path / "other", registry)
    assert gt.num_without_positives == 4 and "no UTM ground truth" in gt.notes[0]


def test_format_msls_challenge_with_and_without_ground_truth(tmp_path):
    format_both_challenge_copies(tmp_path)


def test_evaluate_msls_challenge_per_city_writes_predictions(
    tmp_path, capsys, monkeypatch, isolated_dirs
):
    from tests.test_cli import run

    format_both_challenge_copies(tmp_path)
    monkeypatch.setenv("VPRBENCH_DATASETS_YAML", str(tmp_path / "datasets.yaml"))
    args = ["evaluate", "--model", "pixels", "--dataset", "msls-challenge", "--k", "1,2"]
    code, out, err = run([*args, "--per-city"], capsys, monkeypatch)
    assert code == 0, err
    (record_path,) = [p for p in (isolated_dirs["results"] / "runs").glob("*.json")]
    record = json.loads(record_path.read_text())
    assert record["settings"]["per_city"] is True and record["results"]["ground_truth"] is True
    # each city's own search is recorded (an approximate index would name its own nlist per city)
    assert record["settings"]["search"]["per_group"] == {
        city: {"database": 2, "backend": "faiss"} for city in ("athens", "miami")}  # fmt: skip
    # no seq_info.csv in these folders: the 'sequence' rule falls back to independent queries, said so
    resampling = record["results"]["resampling"]
    assert resampling["rule"] == "iid" and resampling["requested"] == "sequence"
    assert "seq_info.csv" in resampling["note"]
    # two database images per city cannot fill the 25 keys the official scorer reads per line
    assert "msls_predictions" not in record["files"]
    assert "fewer than 25 results" in record["notes"][0]
    from vprbench.evaluate.msls import msls_prediction_lines

    ds = load_formatted("msls-challenge", data_root())
    indices = np.load(record["files"]["predictions"])["indices"]
    lines = msls_prediction_lines(ds, indices, k=2).splitlines()
    assert [line.split()[0] for line in lines] == ["miami_q0", "miami_q1", "athens_q0", "athens_q1"]
    for line in lines:  # per city: every prediction comes from the query's own city
        city = line.split()[0].split("_")[0]
        assert len(line.split()) == 3 and all(k.startswith(city) for k in line.split()[1:])
    indices[1, 1] = -1  # a query with fewer results: refused, never a ragged line
    with pytest.raises(ValueError, match="1 queries have fewer than 2 results"):
        msls_prediction_lines(ds, indices, k=2)
    # the dataset without ground truth: predictions but no recall
    code, out, err = run(
        [*args, "--root", str(tmp_path / "other"), "--per-city"], capsys, monkeypatch
    )
    assert code == 0 and "no ground truth here" in out
