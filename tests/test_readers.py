"""Each ground-truth reader on the real files in ../shared/data, and on realistic generated ones."""

import shutil

import numpy as np
import pytest

from vprbench.datasets.readers import (
    parse_vdd_name,
    read_gsv_cities,
    read_pnv,
    read_vdd,
    read_vpr_bench,
    read_vpr_bench_positives,
)
from vprbench.errors import VPRBenchError

VPR_BENCH_QUERY_COUNTS = {
    "17places": 406,
    "CrossSeason_CoHOG_Dataset": 191,
    "ESSEX3IN1_dataset": 210,
    "GardensPointWalking": 200,
    "GardensPoint_TN": 400,
    "Living": 32,
    "Nordland": 2760,
    "Pittsburgh": 1000,
    "SPEDTEST": 607,
    "Synthia-NightToFall": 813,
    "Tokyo247": 315,
    "inria_holidays": 300,
}


def test_vpr_bench_nordland_star_and_sped(shared_data):
    nordland = read_vpr_bench_positives(shared_data / "vprbench_gt/Nordland/ground_truth_new.npy")
    assert len(nordland) == 2760
    # Nordland*: query i matches references 10i-1, 10i, 10i+1 within 0..27591.
    for i in (0, 1, 1000, 2759):
        expected = [j for j in (10 * i - 1, 10 * i, 10 * i + 1) if 0 <= j < 27592]
        assert nordland[i].tolist() == expected
    sped = read_vpr_bench_positives(shared_data / "vprbench_gt/SPEDTEST/ground_truth_new.npy")
    assert [p.tolist() for p in sped] == [[i] for i in range(607)]


@pytest.mark.parametrize("name,count", sorted(VPR_BENCH_QUERY_COUNTS.items()))
def test_vpr_bench_query_counts(shared_data, name, count):
    assert (
        len(read_vpr_bench_positives(shared_data / f"vprbench_gt/{name}/ground_truth_new.npy"))
        == count
    )


def test_gsv_cities_nordland_equals_vpr_bench(shared_data):
    gt = read_gsv_cities(shared_data / "gsv-cities", prefix="Nordland")
    assert (len(gt.database), len(gt.queries)) == (27592, 2760)
    assert gt.database[0] == "ref/0000000.jpg" and gt.queries[-1] == "query/0002759.jpg"
    vb = read_vpr_bench_positives(shared_data / "vprbench_gt/Nordland/ground_truth_new.npy")
    assert all(np.array_equal(a, b) for a, b in zip(gt.positives, vb, strict=True))


def test_gsv_cities_sped(shared_data):
    gt = read_gsv_cities(shared_data / "gsv-cities", prefix="SPED")
    assert (len(gt.database), len(gt.queries)) == (607, 607)
    assert [p.tolist() for p in gt.positives[:3]] == [[0], [1], [2]]


def test_gsv_cities_msls_val_740(shared_data, tmp_path):
    # The shared folder lacks msls_val_dbImages.npy; give the reader a database list of the real size.
    for suffix in ("qImages", "qIdx", "pIdx"):
        shutil.copy(shared_data / f"gsv-cities/msls_val_{suffix}.npy", tmp_path)
    np.save(tmp_path / "msls_val_dbImages.npy", np.array([f"db/{i:05d}.jpg" for i in range(18871)]))
    gt = read_gsv_cities(tmp_path)  # prefix detected
    assert (len(gt.database), len(gt.queries)) == (18871, 740)
    q_all = np.load(tmp_path / "msls_val_qImages.npy")
    q_idx = np.load(tmp_path / "msls_val_qIdx.npy")
    assert gt.queries == [str(q) for q in q_all[q_idx]]
    dropped = sorted(set(range(747)) - set(q_idx.tolist()))
    assert dropped == [487, 551, 626, 629, 630, 704, 737]
    sizes = [len(p) for p in gt.positives]
    assert min(sizes) == 1 and max(sizes) == 88 and gt.num_without_positives == 0
    assert gt.notes == ["7 of 747 queries dropped by msls_val_qIdx.npy"]


def test_gsv_cities_missing_ground_truth_is_named(shared_data, tmp_path):
    for suffix in ("dbImages", "qImages"):
        shutil.copy(shared_data / f"gsv-cities/pitts30k_test_{suffix}.npy", tmp_path)
    with pytest.raises(VPRBenchError, match="pitts30k_test_gt.npy"):
        read_gsv_cities(tmp_path)


def _write_lists(tmp_path, shared_data, prefix):
    db = tmp_path / "db.txt"
    q = tmp_path / "q.txt"
    db.write_text("\n".join(np.load(shared_data / f"gsv-cities/{prefix}_dbImages.npy")))
    q.write_text("\n".join(np.load(shared_data / f"gsv-cities/{prefix}_qImages.npy")))
    return db, q


def test_pnv_pitts30k_radius_25m(shared_data, tmp_path):
    db, q = _write_lists(tmp_path, shared_data, "pitts30k_test")
    npz = shared_data / "patchnetvlad/pitts30k_test.npz"
    gt = read_pnv(npz, db, q)
    assert (len(gt.database), len(gt.queries), gt.threshold) == (10000, 6816, 25.0)
    utm = np.load(npz)
    for i in (0, 17, 3333, 6815):  # brute force in float64 for a few queries
        d = np.linalg.norm(utm["utmDb"] - utm["utmQ"][i], axis=1)
        assert gt.positives[i].tolist() == np.flatnonzero(d <= 25).tolist()
    assert gt.num_without_positives == 0


def test_pnv_nordland_radius_is_seven_frames_and_window_is_ten(shared_data, tmp_path):
    npz = shared_data / "patchnetvlad/nordland.npz"
    names = tmp_path / "names.txt"
    names.write_text("\n".join(f"images-{i:05d}.png" for i in range(27592)))
    # The file stores frame f as (f, f): a Euclidean radius of 10 reaches |df| <= 10/sqrt(2) = 7.07.
    radius = read_pnv(npz, names, names)
    assert radius.positives[100].tolist() == list(range(93, 108))
    assert radius.positives[0].tolist() == list(range(0, 8))
    window = read_pnv(npz, names, names, rule="frame-window")
    assert window.positives[100].tolist() == list(range(90, 111))
    assert window.positives[27591].tolist() == list(range(27581, 27592))


def test_pnv_list_length_mismatch(shared_data, tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("a.jpg\nb.jpg\n")
    with pytest.raises(
        VPRBenchError, match=r"short.txt: 2 database images listed, the .npz has 10000"
    ):
        read_pnv(shared_data / "patchnetvlad/pitts30k_test.npz", short, short)


def _vdd_name(east, north, pano="pano", note="note"):
    return f"@{east:010.2f}@{north:010.2f}@17@T@040.44210@-079.99592@{pano}@01@090@000@@@20091001_120000@{note}@.jpg"


def test_parse_vdd_name_all_fields():
    name = _vdd_name(584744.97, 4476709.92, pano="abc_DEF-1", note="pitch1_yaw1")
    parsed = parse_vdd_name(f"images/test/queries/{name}")
    assert parsed.utm_east == 584744.97 and parsed.utm_north == 4476709.92
    assert (parsed.utm_zone_number, parsed.utm_zone_letter) == ("17", "T")
    assert (parsed.latitude, parsed.longitude) == ("040.44210", "-079.99592")
    assert (parsed.pano_id, parsed.tile_num, parsed.heading, parsed.pitch) == (
        "abc_DEF-1",
        "01",
        "090",
        "000",
    )
    assert (parsed.roll, parsed.height) == ("", "")
    assert parsed.timestamp == "20091001_120000" and parsed.note == "pitch1_yaw1"
    assert parsed.extension == ".jpg"


@pytest.mark.parametrize(
    "bad,match",
    [
        ("@584744.97@4476709.92@.jpg", "found 3 field"),
        ("plain.jpg", "not a VDD file name"),
        (_vdd_name(1, 2).replace("@0000001.00@", "@east@"), "must be numbers"),
    ],
)
def test_parse_vdd_name_errors_name_the_file(bad, match):
    with pytest.raises(VPRBenchError, match=match) as info:
        parse_vdd_name(bad)
    assert bad in str(info.value)


def test_read_vdd_positives_by_radius(tmp_path):
    (tmp_path / "database").mkdir()
    (tmp_path / "queries").mkdir()
    # Database along the north axis every 10 m; queries at 0 m, 24 m, 1000 m.
    for i in range(6):
        (tmp_path / "database" / _vdd_name(500000, 4000000 + 10 * i, pano=f"d{i}")).touch()
    for j, north in enumerate((0, 24, 1000)):
        (tmp_path / "queries" / _vdd_name(500000, 4000000 + north, pano=f"q{j}")).touch()
    gt = read_vdd(tmp_path, threshold=25)
    # sorted file names sort by northing here, so database index i is at 10*i m.
    assert [p.tolist() for p in gt.positives] == [[0, 1, 2], [0, 1, 2, 3, 4], []]
    assert gt.num_without_positives == 1


def test_read_vpr_bench_folder_counts_must_match(tmp_path):
    from tests.conftest import make_vpr_bench_folder

    folder = make_vpr_bench_folder(tmp_path / "vb", 4, [[0], [1], [2]])
    gt = read_vpr_bench(folder)
    assert gt.database[0] == "ref/0000000.png" and len(gt.queries) == 3
    (folder / "query" / "0000002.png").unlink()
    with pytest.raises(VPRBenchError, match="3 queries, but .* holds 2 images"):
        read_vpr_bench(folder)
