"""Intervals and paired tests for dependent queries (clusters, moving blocks), checked against hand-made
cases and against resampling code written here independently of vprbench/metrics.py."""

import json

import numpy as np
import pytest
import yaml
from scipy.stats import binom

from vprbench.errors import VPRBenchError
from vprbench.evaluate.metrics import (
    Resampling,
    mcnemar_exact,
    paired_comparison,
    recall_interval,
    sign_flip_pvalue,
    tango_interval,
)


def tango_by_grid(only_a: int, only_b: int, n: int, z: float = 1.959963984540054):
    """Tango's interval by brute force: for each difference d on a fine grid, maximise the likelihood
    of the paired 2x2 table under P(only A) - P(only B) = d numerically, and keep the d whose score
    statistic is within z."""
    from scipy.optimize import minimize_scalar

    b, c = only_a, only_b

    def statistic(d):
        lo, hi = max(0.0, -d) + 1e-12, (1 - d) / 2 - 1e-12  # P(only B) keeps every cell in [0, 1]

        def nll(p):
            q = 1 - 2 * p - d
            return -(b * np.log(max(p + d, 1e-300)) + c * np.log(max(p, 1e-300))
                     + (n - b - c) * np.log(max(q, 1e-300)))  # fmt: skip

        p = minimize_scalar(nll, bounds=(lo, hi), method="bounded", options={"xatol": 1e-12}).x
        return (b - c - n * d) / np.sqrt(n * (2 * p + d * (1 - d)))

    grid = np.linspace(-0.999, 0.999, 19981)  # steps of 1e-4
    inside = grid[[abs(statistic(d)) <= z for d in grid]]
    return float(inside.min()), float(inside.max())


@pytest.mark.parametrize("only_a,only_b,n", [(7, 2, 100), (0, 0, 600), (30, 10, 600), (3, 12, 50)])
def test_tango_interval_matches_a_brute_force_profile_likelihood(only_a, only_b, n):
    low, high = tango_interval(only_a, only_b, n)
    ref_low, ref_high = tango_by_grid(only_a, only_b, n)
    assert low == pytest.approx(ref_low, abs=2e-4) and high == pytest.approx(ref_high, abs=2e-4)
    if only_a == only_b == 0:  # nothing discordant: not certainty, about +/-0.64 points at 600
        assert -low == pytest.approx(high) and 0.006 < high < 0.007


def test_sign_flip_test_is_mcnemar_with_one_query_per_cluster_and_worked_out_by_hand():
    for only_a, only_b in ((5, 0), (1, 0), (12, 7), (30, 10), (100, 140)):
        d = np.array([1] * only_a + [-1] * only_b)
        assert sign_flip_pvalue(d) == pytest.approx(mcnemar_exact(only_a, only_b), rel=1e-9)
    # clusters with differences 3, 1, 1: the sums +-3 +-1 +-1 reach |5| in 2 of 8 sign patterns
    assert sign_flip_pvalue(np.array([3, 1, 1])) == pytest.approx(0.25)
    # 2 and -1: the four sums +-2 +-1 are all at least |1|
    assert sign_flip_pvalue(np.array([2, -1, 0])) == pytest.approx(1.0)
    assert sign_flip_pvalue(np.zeros(4, dtype=int)) == 1.0


def test_clustered_comparison_is_less_certain_than_the_independent_one():
    # five discordant queries, all A's: independent, McNemar gives 1/16; in clusters of sizes
    # 3, 1, 1 (say three views of one place), the sign-flip test gives 1/4
    a = np.array([1, 1, 1, 1, 1, 0, 0, 0], dtype=bool)
    b = np.zeros(8, dtype=bool)
    clusters = np.array([0, 0, 0, 1, 2, 3, 3, 4])
    iid = paired_comparison(a, b, 1)
    clustered = paired_comparison(a, b, 1, Resampling("place", clusters=clusters))
    assert iid.p_value == pytest.approx(0.0625) and clustered.p_value == pytest.approx(0.25)
    assert (clustered.only_a, clustered.only_b, clustered.difference) == (5, 0, 5 / 8)


def test_cluster_bootstrap_of_duplicated_queries_is_the_bootstrap_of_the_clusters():
    # 300 places, each seen twice with the same outcome: the information of 300 queries, not 600
    hits = np.repeat(np.arange(300) < 90, 2)  # recall 0.3
    places = np.repeat(np.arange(300), 2)
    low, high = recall_interval(hits, Resampling("place", clusters=places))
    assert low == pytest.approx(binom.ppf(0.025, 300, 0.3) / 300, abs=0.011)
    assert high == pytest.approx(binom.ppf(0.975, 300, 0.3) / 300, abs=0.011)
    iid_low, iid_high = recall_interval(hits)
    assert (high - low) / (iid_high - iid_low) > 1.3  # about sqrt(2) wider


def independent_cluster_bootstrap(hits, clusters, draws=20_000, seed=123):
    """The cluster bootstrap written out: pick whole clusters with replacement by index."""
    rng = np.random.default_rng(seed)
    ids = np.unique(clusters)
    members = [np.flatnonzero(clusters == c) for c in ids]
    out = []
    for _ in range(draws):
        picked = np.concatenate([members[i] for i in rng.integers(0, len(ids), len(ids))])
        out.append(hits[picked].mean())
    return np.quantile(out, [0.025, 0.975])


def independent_block_bootstrap(values, length, draws=20_000, seed=123):
    """The circular moving-block bootstrap written out: concatenate blocks of consecutive queries
    (wrapping at the end) from random starts, cut to N."""
    rng = np.random.default_rng(seed)
    n = len(values)
    blocks = -(-n // length)
    out = []
    for _ in range(draws):
        starts = rng.integers(0, n, blocks)
        index = (starts[:, None] + np.arange(length)[None]).reshape(-1)[:n] % n
        out.append(values[index].mean())
    return np.quantile(out, [0.025, 0.975])


def test_cluster_and_block_bootstraps_agree_with_independent_resampling_code():
    rng = np.random.default_rng(5)
    # clusters of unequal sizes with a shared outcome tendency
    sizes = rng.integers(1, 30, 120)
    clusters = np.repeat(np.arange(120), sizes)
    hits = rng.random(clusters.size) < np.repeat(rng.random(120), sizes)
    ref = independent_cluster_bootstrap(hits, clusters)
    got = recall_interval(hits, Resampling("place", clusters=clusters))
    assert got == pytest.approx(tuple(ref), abs=0.012)
    # a sequence with runs of hits (as consecutive Nordland frames)
    seq = np.repeat(rng.random(60) < 0.4, rng.integers(1, 20, 60))
    ref = independent_block_bootstrap(seq.astype(float), 10)
    got = recall_interval(seq, Resampling("blocks", length=10))
    assert got == pytest.approx(tuple(ref), abs=0.012)
    # the paired difference by blocks
    other = np.roll(seq, 3)
    ref = independent_block_bootstrap(seq.astype(float) - other, 10)
    c = paired_comparison(seq, other, 1, Resampling("blocks", length=10))
    assert (c.low, c.high) == pytest.approx(tuple(ref), abs=0.012)


def test_moving_blocks_worked_out_by_hand():
    # alternating hit, miss: every circular block of 2 holds exactly one hit, so every resample
    # has recall 0.5 and the interval is a point; blocks of 1 are the independent bootstrap
    alternating = np.arange(100) % 2 == 0
    assert recall_interval(alternating, Resampling("blocks", length=2)) == (0.5, 0.5)
    low, high = recall_interval(alternating, Resampling("blocks", length=1))
    assert low == pytest.approx(binom.ppf(0.025, 100, 0.5) / 100, abs=0.02)
    # runs of 10 hits then 10 misses: blocks of 10 see the runs, so the interval is wider than iid
    runs = (np.arange(200) // 10) % 2 == 0
    blocks = recall_interval(runs, Resampling("blocks", length=10))
    iid = recall_interval(runs)
    assert blocks[1] - blocks[0] > 1.5 * (iid[1] - iid[0])


def test_a_resampling_with_no_spread_falls_back_to_one_observation_per_cluster():
    # no hit at all, or no discordant query: every resample is alike, and the bootstrap would print
    # [0, 0]; counted per block instead (60 blocks of 10), as Clopper-Pearson and Tango give them
    from vprbench.evaluate.clusters import record_entry
    from vprbench.evaluate.metrics import clopper_pearson

    blocks = Resampling("blocks", length=10)
    none = np.zeros(600, dtype=bool)
    assert recall_interval(none, blocks) == pytest.approx(clopper_pearson(0, 60))
    assert recall_interval(~none, blocks) == pytest.approx(clopper_pearson(60, 60))
    same = paired_comparison(none, none, 1, blocks)
    assert (same.low, same.high) == pytest.approx(tango_interval(0, 0, 60)) and same.p_value == 1.0
    # few clusters: the record warns (the percentile bootstrap undercovers)
    few = Resampling("place", clusters=np.repeat(np.arange(8), 5))
    entry = record_entry({"rule": "place", "length": None, "source": "test"}, few, 40)
    assert entry["clusters"] == 8 and entry["warning"].startswith("only 8 clusters")
    many = Resampling("place", clusters=np.arange(40))
    assert "warning" not in record_entry({"rule": "place", "length": None, "source": "t"}, many, 40)


def test_every_shipped_protocol_names_its_cluster_rule_and_bad_rules_are_refused(tmp_path):
    from vprbench.datasets.protocols import default_registry_path, load_registry

    raw = yaml.safe_load(default_registry_path().read_text())
    assert all("cluster" in entry for entry in raw["protocols"].values())
    registry = load_registry()
    assert registry["pitts30k-test"].cluster_spec() == "place"
    assert registry["msls-val"].cluster_spec() == "sequence"
    assert registry["nordland-sample"].cluster_spec() == "blocks:10"
    assert registry["sped"].cluster_spec() == "iid"
    for bad, message in (({"rule": "blocks"}, "'length'"), ({"rule": "views"}, "must be one of"),
                         ({"rule": "place", "length": 3}, "'length'")):  # fmt: skip
        raw["protocols"]["sped"]["cluster"] = bad
        path = tmp_path / "datasets.yaml"
        path.write_text(yaml.safe_dump(raw))
        with pytest.raises(VPRBenchError, match=rf"protocols\.sped\.cluster: .*{message}"):
            load_registry(path)


def test_pittsburgh_places_are_the_24_views_of_each_panorama(tmp_path, isolated_dirs, shared_data):
    """The real Pitts30k-test coordinates (Patch-NetVLAD .npz): 6,816 queries at 284 places."""
    from vprbench.datasets.formatted import load_formatted, write_formatted
    from vprbench.datasets.groundtruth import GroundTruth
    from vprbench.datasets.protocols import load_registry
    from vprbench.evaluate.clusters import query_clusters

    npz = shared_data / "patchnetvlad" / "pitts30k_test.npz"
    with np.load(npz) as z:
        utm_db, utm_q = z["utmDb"], z["utmQ"]
    gt = GroundTruth([f"db/{i}.jpg" for i in range(len(utm_db))],
                     [f"q/{i}.jpg" for i in range(len(utm_q))],
                     [np.zeros(0, dtype=np.int64)] * len(utm_q), "pnv", "utm-radius", 25.0,
                     image_root=tmp_path,
                     coordinates={"kind": "utm", "database": utm_db, "queries": utm_q})  # fmt: skip
    registry = load_registry()
    write_formatted(gt, "pitts30k-test", isolated_dirs["data"], registry["pitts30k-test"], str(npz))
    ds = load_formatted("pitts30k-test", isolated_dirs["data"])
    info = query_clusters(ds)
    assert info["rule"] == "place" and info["source"] == "protocol pitts30k-test (datasets.yaml)"
    assert np.bincount(np.bincount(info["clusters"])).tolist() == [0] * 24 + [284]
    # query order: the 24 views of a place are consecutive in the NetVLAD lists
    assert (np.diff(info["clusters"]) != 0).sum() == 283
    # blocks need no data; a rule that lacks its data falls back to independent queries, said so
    assert query_clusters(ds, "blocks:24")["length"] == 24
    fallback = query_clusters(ds, "sequence")
    assert fallback["rule"] == "iid" and "seq_info.csv" in fallback["note"]
    with pytest.raises(VPRBenchError, match="blocks needs a length"):
        query_clusters(ds, "blocks")


def test_msls_sequences_are_read_from_seq_info_and_cluster_the_queries(tmp_path, isolated_dirs):
    import pandas as pd

    from tests.test_formatters import make_msls, registry_with
    from vprbench.datasets.formatted import load_formatted
    from vprbench.datasets.manage import format_dataset
    from vprbench.evaluate.clusters import query_clusters
    from vprbench.paths import data_root

    src = make_msls(tmp_path / "msls")
    for city in ("cph", "sf"):
        folder = src / "train_val" / city / "query"
        keys = [f"{city}_q{i}" for i in range(4)]
        pd.DataFrame({"key": keys, "sequence_key": ["s1", "s1", "s2", "s3"],
                      "frame_number": [0, 1, 0, 0]}).to_csv(folder / "seq_info.csv")  # fmt: skip
    registry = registry_with(tmp_path, "msls-val-full", 6, 6)
    format_dataset("msls-val-full", src, data_root(), registry)
    ds = load_formatted("msls-val-full", data_root())
    # msls-val-full keeps q0, q1, q2 of each city (q3 is a panorama), in city order
    info = query_clusters(ds)
    assert info["rule"] == "sequence"
    assert info["clusters"].tolist() == [0, 0, 1, 2, 2, 3]  # cph/s1 cph/s1 cph/s2 sf/s1 sf/s1 sf/s2
    (src / "train_val/sf/query/seq_info.csv").write_text(
        ",key,sequence_key,frame_number\n0,x,s,0\n"
    )
    with pytest.raises(VPRBenchError, match=r"sf/query/seq_info.csv: no sequence for 3 image"):
        format_dataset("msls-val-full", src, data_root(), registry)


def test_evaluate_records_the_protocols_cluster_rule_and_compare_refuses_mixed_rules(
    capsys, monkeypatch, isolated_dirs
):
    from tests.test_cli import run
    from vprbench.evaluate.metrics import hits_at_k

    code, out, _ = run(["evaluate", "--model", "pixels", "--dataset", "nordland-sample", "--k", "1,5",
                        "--json"], capsys, monkeypatch)  # fmt: skip
    assert code == 0
    blocks = json.loads(out)
    resampling = blocks["results"]["resampling"]
    assert (resampling["rule"], resampling["length"]) == ("blocks", 10)
    assert resampling["source"] == "protocol nordland-sample (datasets.yaml)"
    assert resampling["description"] == "moving blocks of 10 consecutive queries"
    with np.load(blocks["files"]["predictions"]) as z:
        ranks = z["first_hit_rank"]
    for k in (1, 5):
        expected = recall_interval(hits_at_k(ranks, k), Resampling("blocks", length=10))
        assert blocks["results"]["ci95"][str(k)] == pytest.approx(list(expected))
    code, out, _ = run(["evaluate", "--model", "pixels", "--dataset", "nordland-sample", "--k", "1,5",
                        "--cluster", "iid", "--json"], capsys, monkeypatch)  # fmt: skip
    iid = json.loads(out)
    assert iid["run_id"] != blocks["run_id"]  # both records kept
    assert iid["results"]["recall"] == blocks["results"]["recall"]
    width = lambda r: r["results"]["ci95"]["5"][1] - r["results"]["ci95"]["5"][0]  # noqa: E731
    assert width(blocks) > width(iid)  # consecutive frames: blocks are wider
    code, _, err = run(["compare", blocks["run_id"], iid["run_id"]], capsys, monkeypatch)
    assert code == 1 and "resample their queries differently" in err
    # the protocol's own rule written out is the same run (the same record, not a new id)
    code, out, _ = run(["evaluate", "--model", "pixels", "--dataset", "nordland-sample", "--k", "1,5",
                        "--cluster", "blocks:10", "--json"], capsys, monkeypatch)  # fmt: skip
    assert json.loads(out)["run_id"] == blocks["run_id"]
    # another --k is another record of the same configuration: a report keeps the newest
    code, out, _ = run(["evaluate", "--model", "pixels", "--dataset", "nordland-sample", "--k",
                        "1,5,10", "--json"], capsys, monkeypatch)  # fmt: skip
    newest = json.loads(out)
    assert newest["run_id"] != blocks["run_id"]
    # in a report the iid run is another row (other intervals), never a second seed of one row
    from vprbench.report.records import frame, load_records
    from vprbench.report.tables import recall_table

    df = frame(load_records(isolated_dirs["results"]))
    table = recall_table(df)
    assert sorted(table.index) == ["pixels (cluster blocks:10)", "pixels (cluster iid)"]
    assert (table.attrs["n"] <= 1).all().all()  # one record per cell (the iid run has no R@10)
    assert newest["run_id"] in set(df["run_id"]) and blocks["run_id"] not in set(df["run_id"])
    code, _, err = run(["evaluate", "--model", "pixels", "--dataset", "nordland-sample",
                        "--cluster", "views"], capsys, monkeypatch)  # fmt: skip
    assert code == 1 and "--cluster: expected 'protocol'" in err
