"""`evaluate --rerank` (with --rerank-k and --rerank-option) and `--metrics` (with --gt-soft) under
torchrun (two gloo ranks): the ranks share the extraction, the search and the re-ranking, and rank
0's record equals one process's (issue 27)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.launch import evaluate_in_subprocess, torchrun
from tests.test_rerank import B, G, R, format_city

REPO = Path(__file__).resolve().parents[1]
# 4 database images (in the layout's order G R B B, B G G G, R R R R, R B R R), 3 queries. Queries
# 0 (R G B B) and 1 (R B B G), whose positive is G R B B, retrieve R R R R first (top-left R) and are
# re-ranked to G R B B (3 mutual matches); query 2 (B G G B) finds B G G G in both stages. Rank 0
# re-ranks queries 0 and 2, rank 1 query 1: R@1 1/3 global, 3/3 re-ranked
CITY = {"database": [((552000.0, 4180000.0), [R, R, R, R]),
                     ((550005.0, 4180000.0), [G, R, B, B]),
                     ((551000.0, 4180000.0), [B, G, G, G]),
                     ((553005.0, 4180000.0), [R, B, R, R])],
        "queries": [((550000.0, 4180000.0), [R, G, B, B]),
                    ((550010.0, 4180000.0), [R, B, B, G]),
                    ((551003.0, 4180000.0), [B, G, G, B])]}  # fmt: skip

SCRIPT = f"""import sys
sys.path.insert(0, {str(REPO)!r})
from tests.test_rerank import register_toys
register_toys()
from vprbench.cli import main
main()
"""


def test_torchrun_reranks_and_scores_like_one_process(tmp_path, capsys, monkeypatch, isolated_dirs):
    format_city(tmp_path, CITY, "city-rerank3", capsys, monkeypatch)
    script = tmp_path / "vprbench_with_toys.py"
    script.write_text(SCRIPT)

    def evaluate(results: Path, launcher: list[str], *extra: str):
        argv = ["--model", "test-local", "--dataset", "city-rerank3", "--k", "1,2", *extra]
        return evaluate_in_subprocess([str(script)], argv, results, launcher)

    rerank = ("--rerank", "test-mnn")
    one, one_pred = evaluate(tmp_path / "one", [], *rerank)
    two, two_pred = evaluate(tmp_path / "two", torchrun(), *rerank)
    assert two["settings"]["rerank"]["ranks"] == 2 and "ranks" not in one["settings"]["rerank"]
    assert two["results"]["recall"] == one["results"]["recall"]
    assert two["results"]["recall_global"] == one["results"]["recall_global"]
    assert one["results"]["recall_global"]["1"] == 1 / 3 and one["results"]["recall"]["1"] == 1.0
    for name in ("indices", "distances", "global_indices", "first_hit_rank"):
        np.testing.assert_array_equal(two_pred[name], one_pred[name])
    # with the options a user passes: fewer candidates than saved, the counting variant
    options = (*rerank, "--rerank-k", "3", "--rerank-option", "one_match=count")
    one, one_pred = evaluate(tmp_path / "one-options", [], *options)
    two, two_pred = evaluate(tmp_path / "two-options", torchrun(), *options)
    assert (two["settings"]["rerank"]["k"], two["settings"]["rerank"]["options"]) == (
        3, {"one_match": "count"})  # fmt: skip
    assert two["results"]["recall"] == one["results"]["recall"]
    np.testing.assert_array_equal(two_pred["indices"], one_pred["indices"])
    # the robotics metrics from rank 0's matrix: the same values
    metrics = ("--metrics", "all", "--gt-soft", "1000")
    one, _ = evaluate(tmp_path / "one-metrics", [], *metrics)
    two, _ = evaluate(tmp_path / "two-metrics", torchrun(), *metrics)
    assert two["results"]["metrics"] == one["results"]["metrics"]
    assert two["results"]["metrics"]["vpr-tutorial-multi"]["gt_soft"]["pairs"] == 7
