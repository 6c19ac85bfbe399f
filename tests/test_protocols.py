import pytest
import yaml

from vprbench.datasets.protocols import default_registry_path, get_protocol, load_registry
from vprbench.errors import VPRBenchError

# counts, rule, threshold, unit, then the official inference batch size of CricaVPR (paper: 8 for Pitts,
# 16 for the rest) and of D²-VPR (eval_encoder.py: SPED 3, AmsterTime/Pitts 8, MSLS-val/Nordland** 128,
# else parser.py's 64), and the batch order.
EXPECTED = {
    "pitts30k-test": (10000, 6816, "utm-radius", 25, "m", 8, 8, "listed"),
    "pitts30k-val": (10000, 7608, "utm-radius", 25, "m", 8, 8, "listed"),
    "msls-val": (18871, 740, "utm-radius", 25, "m", 16, 128, "vdd-utm"),
    "msls-val-full": (18871, None, "utm-radius", 25, "m", 16, 64, "vdd-utm"),
    "msls-challenge": (36565, 1135, "utm-radius", 25, "m", 16, 64, "vdd-utm"),
    "msls-sample": (None, None, "utm-radius", 25, "m", 16, 64, "vdd-utm"),
    "nordland": (27592, 2760, "explicit", 1, "frames", 16, 64, "listed"),
    "nordland-pnv": (27592, 27592, "frame-window", 10, "frames", 16, 128, "listed"),
    "sped": (607, 607, "same-index", 0, "index", 16, 3, "vdd-pairs"),
    "pitts250k-test": (83952, 8280, "utm-radius", 25, "m", 8, 8, "listed"),
    "amstertime": (None, None, "same-index", 0, "index", 16, 8, "vdd-pairs"),
    "nordland-sample": (600, 600, "explicit", 1, "index", 16, 64, "listed"),
    "tokyo247": (75984, 315, "utm-radius", 25, "m", 16, 64, "vdd-utm"),
    "sf-xl-test-v1": (None, 1000, "utm-radius", 25, "m", 16, 64, "listed"),
    "sf-xl-test-v2": (None, 598, "utm-radius", 25, "m", 16, 64, "listed"),
    "sf-xl-night": (None, 466, "utm-radius", 25, "m", 16, 64, "listed"),
    "sf-xl-occlusion": (None, 76, "utm-radius", 25, "m", 16, 64, "listed"),
    **{f"svox-{c}": (17166, n, "utm-radius", 25, "m", 16, 64, "listed")
       for c, n in (("night", 823), ("overcast", 872), ("rain", 937), ("snow", 870), ("sun", 854))},
    "eynsham": (23935, None, "utm-radius", 25, "m", 16, 64, "listed"),
    "st-lucia": (1549, 1464, "utm-radius", 25, "m", 16, 64, "listed"),
    "baidu-mall-10m": (None, None, "utm-radius", 10, "m", 16, 64, "listed"),
}  # fmt: skip
FORMATTERS = {
    "pitts30k-test": ("netvlad-mat", ("pitts30k_test.mat",)),
    "pitts250k-test": ("netvlad-mat", ("pitts250k_test.mat",)),
    "pitts30k-val": ("netvlad-mat", ("pitts30k_val.mat",)),
    "msls-val": ("msls", ("train_val",)),
    "msls-val-full": ("msls-full", ("train_val",)),
    "msls-challenge": ("msls-test", ("test",)),
    "nordland": ("vpr-bench", ("ground_truth_new.npy",)),
    "nordland-pnv": ("nordland-pnv", ("summer", "winter", "cleanImageNames.txt")),
    "sped": ("vpr-bench", ("ground_truth_new.npy",)),
    "amstertime": ("pairs", ("new", "old")),
    "tokyo247": ("tokyo247", ("images/test/database", "images/test/queries")),
    "sf-xl-night": ("vdd", ("test/database", "test/queries_night")),
    "svox-sun": ("vdd", ("images/test/gallery", "images/test/queries_sun")),
}


def test_registry_holds_the_seeded_protocols():
    registry = load_registry()
    assert list(registry) == list(EXPECTED)
    for name, (n_db, n_q, rule, threshold, unit, crica, d2, order) in EXPECTED.items():
        p = registry[name]
        assert (p.database_count, p.queries_count, p.positive_rule, p.threshold, p.unit) == (
            n_db,
            n_q,
            rule,
            threshold,
            unit,
        )
        assert p.official_batch_size("cricavpr")[0] == crica, name
        assert p.official_batch_size("d2vpr")[0] == d2, name
        assert p.batch_order == order
        assert p.licence and p.obtain and p.description
        if name in FORMATTERS:
            assert (p.formatter, p.source_files) == FORMATTERS[name]
    downloadable = {name for name, p in registry.items() if p.downloads}
    assert downloadable == {"msls-sample", "nordland", "nordland-pnv", "sped", "amstertime"}
    assert registry["msls-sample"].cities == ("zurich",) and registry["msls-val"].cities == ()
    assert [a["name"] for a in registry["nordland-pnv"].downloads] == [
        "summer.tar.gz",
        "winter.tar.gz",
        "cleanImageNames.txt",
    ]


def test_unknown_protocol_lists_valid_names():
    with pytest.raises(
        VPRBenchError,
        match="unknown protocol 'pitts'; valid names: pitts30k-test, pitts30k-val, msls-val",
    ):
        get_protocol("pitts")


def _registry_with(tmp_path, mutate):
    raw = yaml.safe_load(default_registry_path().read_text())
    mutate(raw["protocols"]["sped"])
    path = tmp_path / "datasets.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize(
    "mutate,match",
    [
        (lambda e: e.pop("licence"), r"protocols.sped: missing field 'licence'"),
        (lambda e: e.update(colour="red"), r"protocols.sped: unknown field\(s\) \['colour'\]"),
        (
            lambda e: e["database"].update(count="607"),
            r"protocols.sped.database: field 'count' must be int",
        ),
        (
            lambda e: e["positive"].update(rule="nearby"),
            r"protocols.sped.positive: field 'rule' must be one of",
        ),
        (lambda e: e["positive"].update(threshold=-1), r"field 'threshold' must be >= 0"),
        (lambda e: e["ground_truth"].update(formats=["csv"]), r"unknown format\(s\) \['csv'\]"),
        (
            lambda e: e.update(inference_batch_size={"d2vpr": 0}),
            r"inference_batch_size.d2vpr: must be a positive integer",
        ),
        (
            lambda e: e.update(inference_batch_size={"netvlad": 8}),
            r"inference_batch_size: unknown convention 'netvlad'",
        ),
        (lambda e: e.update(batch_order="random"), r"field 'batch_order' must be one of"),
        (
            lambda e: e["positive"].update(unit="m"),
            r"field 'unit' of rule same-index must be one of \['index'\], got 'm'",
        ),
        (
            lambda e: e["source"].update(formatter="zip"),
            r"sped.source: field 'formatter' must be one of",
        ),
        (
            lambda e: e["source"]["download"][0].update(mirrors=[]),
            r"download\[0\]: field 'mirrors'",
        ),
        (lambda e: e["source"]["download"][0].update(sha256="abc"), r"'sha256' must be 64 hex"),
    ],
)
def test_malformed_entries_name_file_and_field(tmp_path, mutate, match):
    path = _registry_with(tmp_path, mutate)
    with pytest.raises(VPRBenchError, match=match) as info:
        load_registry(path)
    assert str(path) in str(info.value)


def test_not_yaml_and_wrong_top_level(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("protocols: [unclosed")
    with pytest.raises(VPRBenchError, match="not valid YAML"):
        load_registry(bad)
    bad.write_text("- a\n- b\n")
    with pytest.raises(VPRBenchError, match="top-level mapping 'protocols:'"):
        load_registry(bad)
