"""The robotics metrics on hand-made cases: each value worked out by hand in the comments, VPR-Bench's
curve also against scikit-learn itself (the library its performance_comparison.py calls)."""

from __future__ import annotations

import numpy as np
import pytest

from vprbench.evaluate.robotics import (
    best_matches,
    msls_map_at_k,
    precision_at_k,
    sklearn_pr_curve,
    vpr_bench,
    vpr_tutorial_multi,
    vpr_tutorial_single,
)

# four queries' best matches: scores and whether each is right (query 3 has no positive at all)
SCORE = np.array([0.9, 0.8, 0.8, 0.5])
RIGHT = np.array([True, False, True, False])
HAS_POSITIVE = np.array([True, True, True, False])


def test_vpr_bench_by_hand():
    out = vpr_bench(RIGHT, SCORE)
    # distinct scores 0.9 | 0.8 0.8 | 0.5: (tp, fp) = (1, 0), (2, 1), (2, 2); recall over the 2 right
    assert out["curve"]["precision"] == pytest.approx([1 / 2, 2 / 3, 1, 1])
    assert out["curve"]["recall"] == pytest.approx([1, 1, 1 / 2, 0])
    assert out["curve"]["thresholds"] == pytest.approx([0.5, 0.8, 0.9])
    # trapezoids over recall: 0 (recall 1 -> 1) + 0.5 * (2/3 + 1) / 2 + 0.5 * (1 + 1) / 2 = 11/12
    assert out["auc_pr"] == pytest.approx(11 / 12)
    # the best-scored point is right (precision 1): R@100P = recall there, 1/2; EP = (1 + 1/2) / 2
    assert out["r_at_100p"] == pytest.approx(0.5) and out["extended_precision"] == pytest.approx(
        0.75
    )
    # a wrong best-scored match: R@100P 0 (compute_extendedprecision), EP = its precision 0 / 2
    wrong_first = vpr_bench(np.array([False, True, True]), np.array([0.9, 0.8, 0.7]))
    assert wrong_first["r_at_100p"] == 0 and wrong_first["extended_precision"] == 0


def test_vpr_bench_curve_is_scikit_learns():
    from sklearn.metrics import auc, precision_recall_curve

    rng = np.random.default_rng(0)
    for _ in range(20):
        n = int(rng.integers(2, 60))
        scores = np.round(rng.random(n), 1)  # many ties
        matches = rng.random(n) < 0.6
        if not matches.any():
            continue
        want_p, want_r, want_t = precision_recall_curve(matches, scores)
        got_p, got_r, got_t = sklearn_pr_curve(matches, scores)
        np.testing.assert_allclose(got_p, want_p)
        np.testing.assert_allclose(got_r, want_r)
        np.testing.assert_allclose(got_t, want_t)
        assert vpr_bench(matches, scores)["auc_pr"] == pytest.approx(auc(want_r, want_p))


def test_vpr_tutorial_single_by_hand():
    out = vpr_tutorial_single(RIGHT, SCORE, HAS_POSITIVE, n_thresh=3)
    # thresholds 0.9, 0.7, 0.5; 3 queries have a positive
    # >= 0.9: query 0 (right): P 1, R 1/3; >= 0.7: 0, 1, 2: P 2/3, R 2/3; >= 0.5: all: P 1/2, R 2/3
    assert out["curve"]["precision"] == pytest.approx([1, 1, 2 / 3, 1 / 2])
    assert out["curve"]["recall"] == pytest.approx([0, 1 / 3, 2 / 3, 2 / 3])
    # np.trapz(P, R): 1/3 * (1 + 1) / 2 + 1/3 * (1 + 2/3) / 2 + 0 = 11/18
    assert out["auc_pr"] == pytest.approx(11 / 18)
    assert out["r_at_100p"] == pytest.approx(1 / 3) and out["ground_truth_positives"] == 3
    # the two conventions differ on the same scores
    assert vpr_bench(RIGHT, SCORE)["auc_pr"] != pytest.approx(out["auc_pr"])


# two queries and three database images on the unit circle: cosine similarities
# q0: [1, 0.6, 0], q1: [0, 0.8, 1]; positives q0 {0, 1}, q1 {2}
QUERIES = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
DATABASE = np.array([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]], dtype=np.float32)
POSITIVES = [np.array([0, 1]), np.array([2])]


@pytest.mark.parametrize("chunk_rows", [1, 2, 8192])
def test_vpr_tutorial_multi_by_hand(chunk_rows):
    out = vpr_tutorial_multi(QUERIES, DATABASE, POSITIVES, n_thresh=3, chunk_rows=chunk_rows)
    # thresholds 1, 0.5, 0 over all 6 pairs, 3 positive pairs
    # >= 1: (0,0) and (1,2), both right: P 1, R 2/3; >= 0.5: + 0.6 right, 0.8 wrong: P 3/4, R 1;
    # >= 0: all six: P 1/2, R 1
    assert out["curve"]["precision"] == pytest.approx([1, 1, 3 / 4, 1 / 2])
    assert out["curve"]["recall"] == pytest.approx([0, 2 / 3, 1, 1])
    # 2/3 * (1 + 1) / 2 + 1/3 * (1 + 3/4) / 2 = 2/3 + 7/24 = 23/24
    assert out["auc_pr"] == pytest.approx(23 / 24) and out["r_at_100p"] == pytest.approx(2 / 3)


def test_vpr_tutorial_multi_per_city_keeps_each_citys_pairs():
    # cities: q0 and databases 0, 1 in a, q1 and database 2 in b: the pairs (0,0) 1.0, (0,1) 0.6 and
    # (1,2) 1.0, all right (q1's wrong 0.8 to database 1 is another city's); thresholds 1, 0.8, 0.6:
    # >= 1: 2 pairs, >= 0.8: 2, >= 0.6: 3, precision 1 throughout
    groups = {"queries": np.array(["a", "b"]), "database": np.array(["a", "a", "b"])}
    out = vpr_tutorial_multi(QUERIES, DATABASE, POSITIVES, n_thresh=3, groups=groups)
    assert out["curve"]["precision"] == pytest.approx([1, 1, 1, 1])
    assert out["curve"]["recall"] == pytest.approx([0, 2 / 3, 2 / 3, 1])
    assert out["auc_pr"] == pytest.approx(1.0) and out["r_at_100p"] == pytest.approx(1.0)


def test_vpr_tutorial_multi_soft_ground_truth_and_skipped_rows():
    # GTsoft: q1's 0.8 to database 1 is neither right nor wrong: set to the minimum (0), so
    # >= 1: P 1, R 2/3; >= 0.5: + 0.6 right: P 1, R 1; >= 0: all six (3 wrong): P 1/2
    soft = [np.array([0, 1]), np.array([1, 2])]
    out = vpr_tutorial_multi(QUERIES, DATABASE, POSITIVES, soft_positives=soft, n_thresh=3)
    assert out["curve"]["precision"] == pytest.approx([1, 1, 1, 1 / 2])
    assert out["r_at_100p"] == pytest.approx(1)
    # a skipped database image (row 1) leaves the matrix: 4 pairs, 2 positives (0,0) and (1,2)
    skipped = vpr_tutorial_multi(
        QUERIES, DATABASE, POSITIVES, np.array([True, False, True]), n_thresh=3
    )
    assert skipped["ground_truth_positives"] == 2
    assert skipped["curve"]["precision"] == pytest.approx([1, 1, 1, 1 / 2])


def test_skipped_queries_move_no_threshold():
    # single: a fifth query whose image was skipped (score -1, nothing retrieved) but which has a
    # positive: the thresholds stay 0.9, 0.7, 0.5; the recall's denominator is 4
    out = vpr_tutorial_single(np.r_[RIGHT, False], np.r_[SCORE, -1.0], np.r_[HAS_POSITIVE, True],
                              n_thresh=3, retrieved=np.r_[True, True, True, True, False])  # fmt: skip
    assert out["curve"]["precision"] == pytest.approx([1, 1, 2 / 3, 1 / 2])
    assert out["curve"]["recall"] == pytest.approx([0, 1 / 4, 2 / 4, 2 / 4])
    # multi: real similarities 1, 0.6, 0.6, ~1; a skipped query's zero descriptor (similarity 0)
    # must not be the lowest threshold: 1, 0.8, 0.6 (not 1, 0.5, 0): at 0.8 only the two right pairs
    queries = np.array([[1.0, 0.0], [0.6, 0.8], [0.0, 0.0]], dtype=np.float32)
    database = np.array([[1.0, 0.0], [0.6, 0.8]], dtype=np.float32)
    positives = [np.array([0]), np.array([1]), np.array([0])]
    multi = vpr_tutorial_multi(queries, database, positives, n_thresh=3,
                               queries_valid=np.array([True, True, False]))  # fmt: skip
    assert multi["curve"]["precision"] == pytest.approx([1, 1, 1, 1 / 2])
    assert multi["curve"]["recall"][2:] == pytest.approx([2 / 3, 1])  # 3 positive pairs


def test_best_matches_from_a_search():
    indices = np.array([[2, 0], [-1, -1], [1, 2]])
    distances = np.array([[0.2, 1.0], [np.inf, np.inf], [1.0, 1.5]], dtype=np.float32)
    right, score = best_matches(indices, distances, [np.array([2]), np.array([0]), np.array([0])])
    assert right.tolist() == [True, False, False]
    assert score.tolist() == pytest.approx([0.9, -1.0, 0.5])  # 1 - d/2; nothing retrieved: -1


def test_msls_map_at_k_and_precision_at_k_by_hand():
    # mapillary_sls utils/eval.py's own example: Q1 ranks DB0..DB5, positives DB4, DB5; Q2 ranks
    # DB0 DB5 DB4 DB1 DB3 DB2, positives DB0, DB1
    ranks = np.array([[0, 1, 2, 3, 4, 6], [0, 5, 4, 1, 3, 2]])  # 'BD5' (a typo there): 6
    positives = [np.array([4, 5]), np.array([0, 1])]
    evaluated = np.array([True, True])
    # Q1 scores 0 up to k = 3; Q2: a hit at rank 1: 1/min(2, 1) = 1, then 1/2 at k = 2 and 3
    assert msls_map_at_k(ranks, positives, [1, 2, 3], evaluated) == pytest.approx(
        {"1": 0.5, "2": 0.25, "3": 0.25}
    )
    # at k = 5, Q1's DB4 at rank 5 adds 1/5 over min(2, 5): 0.1; Q2 also DB1 at 4: (1 + 2/4) / 2
    assert msls_map_at_k(ranks, positives, [5], evaluated)["5"] == pytest.approx((0.1 + 0.75) / 2)
    # a query without positives scores 0 when evaluated ("miss"), and is left out when not
    none = [np.array([4, 5]), np.array([], dtype=np.int64)]
    assert msls_map_at_k(ranks, none, [5], evaluated)["5"] == pytest.approx(0.05)
    assert msls_map_at_k(ranks, none, [5], np.array([True, False]))["5"] == pytest.approx(0.1)
    # precision@k: Q1 0, Q2 1 at k = 1; 1/3 at k = 3
    assert precision_at_k(ranks, positives, [1, 3]) == pytest.approx({"1": 0.5, "3": 1 / 6})


def test_evaluate_metrics_records_both_conventions(
    tiny_dataset, capsys, monkeypatch, isolated_dirs
):
    """`evaluate --metrics all` on a formatted dataset: VPR-Bench's AUC-PR equals scikit-learn's on
    the saved best matches, VPR_Tutorial's multi matching equals createPR's arithmetic over the whole
    similarity matrix written out here; report draws the curves and puts the values in its CSV."""
    import json

    import h5py
    from sklearn.metrics import auc, precision_recall_curve

    from tests.test_cli import one_line_error, run

    argv = ["evaluate", "--model", "pixels", "--dataset", "tiny", "--k", "1,5", "--json"]
    code, out, _ = run(argv, capsys, monkeypatch)
    plain = json.loads(
        out
    )  # (the report keeps the newest record of a configuration: this one first)
    code, out, err = run([*argv, "--metrics", "all"], capsys, monkeypatch)
    assert code == 0, err
    record = json.loads(out)
    m = record["results"]["metrics"]
    assert m["similarity"].startswith("cosine")
    with np.load(record["files"]["predictions"]) as z:
        indices, distances = z["indices"], z["distances"]
        saved_precision = z["pr_vpr_bench_precision"]
    top = indices[:, 0]
    matches = np.array([t in p for t, p in zip(top, tiny_dataset.positives, strict=True)])
    p, r, _ = precision_recall_curve(matches, 1 - distances[:, 0].astype(np.float64) / 2)
    assert m["vpr-bench"]["auc_pr"] == pytest.approx(auc(r, p))
    np.testing.assert_allclose(saved_precision, p)
    # createPR(matching='multi') by its arithmetic on the whole matrix S [queries x database]
    with h5py.File(record["files"]["descriptors"]) as f:
        S = f["queries"][...] @ f["database"][...].T
    GT = np.zeros(S.shape, bool)
    for q, pos in enumerate(tiny_dataset.positives):
        GT[q, pos] = True
    P, R = [1.0], [0.0]
    for t in np.linspace(S.max(), S.min(), 100):
        B = np.greater_equal(S, t)
        P.append((GT & B).sum() / B.sum())
        R.append((GT & B).sum() / GT.sum())
    assert m["vpr-tutorial-multi"]["curve"]["precision"] == pytest.approx(P)
    assert m["vpr-tutorial-multi"]["curve"]["recall"] == pytest.approx(R)
    best = max(r for r, p in zip(R, P, strict=True) if p == 1)
    assert m["vpr-tutorial-multi"]["r_at_100p"] == pytest.approx(best)
    assert set(m) >= {"vpr-tutorial-single", "precision@k", "map@k"}
    # another run id than the evaluation without --metrics, whose record has no metrics
    assert "metrics" not in plain["results"] and plain["run_id"] != record["run_id"]
    code, _, err = run([*argv, "--metrics", "auc-pr,ap"], capsys, monkeypatch)
    assert code == 1 and "--metrics: unknown ap; expected some of auc-pr" in one_line_error(err)
    # report: the PR figure and the CSV's columns
    report = ["report", "--csv", "--k", "1,5", "--out", str(isolated_dirs["results"] / "rep")]
    code, _, err = run(report, capsys, monkeypatch)
    assert code == 0, err
    assert (isolated_dirs["results"] / "rep" / "pr_curves_tiny.png").is_file()
    import pandas as pd

    table = pd.read_csv(isolated_dirs["results"] / "rep" / "report.csv")
    with_metrics = table[table["run_id"] == record["run_id"]]
    assert with_metrics["AUC-PR VPR-Bench"].item() == pytest.approx(auc(r, p))
    # report --metrics: the LaTeX and Markdown tables of them, to 3 decimals
    code, out, err = run([*report, "--latex", "--markdown", "--metrics"], capsys, monkeypatch)
    assert code == 0, err
    tex = (isolated_dirs["results"] / "rep" / "report-robotics.tex").read_text()
    assert f"{auc(r, p):.3f}" in tex and "\\cmidrule" in tex and "R@100P Tutorial multi" in tex
    assert f"{m['vpr-tutorial-multi']['r_at_100p']:.3f}" in tex
    md = (isolated_dirs["results"] / "rep" / "report-robotics.md").read_text()
    assert "tiny AUC-PR VPR-Bench" in md and "no re-ranking" in md


def test_gt_soft_widens_the_protocol_rule_over_the_stored_coordinates(
    tmp_path, capsys, monkeypatch, isolated_dirs, tiny_dataset
):
    """--gt-soft 1000 on the 4-image city (database east of 550,000 m: 5, 1,000, 2,000, 3,005 m;
    queries at 0, 10, 1,003 m): GTsoft {0, 1}, {0, 1}, {0, 1, 2} around the 25 m hard positives
    {0}, {0}, {1}; the record's multi matching is createPR with that GTsoft."""
    import json

    from tests.test_cli import run
    from tests.test_rerank import format_city
    from tests.test_rerank_torchrun import CITY
    from vprbench.datasets.formatted import load_formatted
    from vprbench.evaluate.robotics import soft_positives
    from vprbench.paths import data_root

    format_city(tmp_path, CITY, "city-soft", capsys, monkeypatch)
    city = load_formatted("city-soft", data_root())
    assert [p.tolist() for p in city.positives] == [[0], [0], [1]]
    soft, entry = soft_positives(city, 1000.0)
    assert [s.tolist() for s in soft] == [[0, 1], [0, 1], [0, 1, 2]]
    assert entry == {"threshold": 1000.0, "unit": "m", "pairs": 7}
    argv = ["evaluate", "--model", "pixels", "--dataset", "city-soft", "--k", "1,2", "--json",
            "--metrics", "auc-pr"]  # fmt: skip
    code, out, err = run([*argv, "--gt-soft", "1000"], capsys, monkeypatch)
    assert code == 0, err
    record = json.loads(out)
    multi = record["results"]["metrics"]["vpr-tutorial-multi"]
    assert multi["gt_soft"] == entry
    (path,) = (isolated_dirs["cache"] / "descriptors" / "city-soft" / "pixels").glob("*.h5")
    import h5py

    with h5py.File(path) as f:
        queries, database = f["queries"][...], f["database"][...]
    want = vpr_tutorial_multi(queries, database, city.positives, soft_positives=soft)
    assert multi["auc_pr"] == pytest.approx(want["auc_pr"])
    assert multi["r_at_100p"] == pytest.approx(want["r_at_100p"])
    code, out, err = run(argv, capsys, monkeypatch)
    plain = json.loads(out)
    assert plain["run_id"] != record["run_id"]
    assert plain["results"]["metrics"]["vpr-tutorial-multi"]["gt_soft"] is None
    # bad requests
    code, _, err = run([*argv[:-2], "--gt-soft", "1000"], capsys, monkeypatch)
    assert code == 1 and "--gt-soft widens the positives of --metrics auc-pr" in err
    code, _, err = run([*argv, "--gt-soft", "10"], capsys, monkeypatch)
    assert code == 1 and "below the protocol's own threshold 25" in err
    code, _, err = run(["evaluate", "--model", "pixels", "--dataset", "tiny", "--k", "1", "--metrics",
                        "auc-pr", "--gt-soft", "30"], capsys, monkeypatch)  # fmt: skip
    assert code == 1 and "dataset 'tiny' stores no coordinates" in err
