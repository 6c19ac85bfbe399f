"""Confidence intervals and paired tests, checked against independent computations, and `compare`."""

import json
import math

import numpy as np
import pytest
from scipy.stats import binom

from vprbench.errors import VPRBenchError
from vprbench.metrics import bootstrap_interval, mcnemar_exact, paired_comparison


def test_bootstrap_interval_is_the_binomial_percentile_interval():
    hits = np.zeros(200, dtype=bool)
    hits[:50] = True  # recall 0.25
    low, high = bootstrap_interval(hits, resamples=20_000, seed=3)
    # resampling 200 queries with replacement: the hit count is Binomial(200, 0.25)
    assert low == pytest.approx(binom.ppf(0.025, 200, 0.25) / 200, abs=0.006)
    assert high == pytest.approx(binom.ppf(0.975, 200, 0.25) / 200, abs=0.006)
    assert bootstrap_interval(hits) == bootstrap_interval(hits)  # seeded


def test_paired_difference_and_exact_mcnemar_worked_out_by_hand():
    n = 100
    a = np.zeros(n, dtype=bool)
    b = np.zeros(n, dtype=bool)
    a[:40] = b[:40] = True  # both right on 40 queries
    a[40:47] = True  # only A on 7
    b[47:49] = True  # only B on 2
    result = paired_comparison(a, b, k=1, resamples=20_000)
    assert (result.only_a, result.only_b) == (7, 2)
    assert result.difference == pytest.approx(0.05)
    # two-sided exact McNemar: 2 * P(X <= 2), X ~ Binomial(9, 1/2) = 2 * (1 + 9 + 36) / 512
    assert result.p_value == pytest.approx(92 / 512) and not result.significant
    # the paired bootstrap of the difference has sd sqrt((p10 + p01 - d^2) / n)
    sd = math.sqrt((0.07 + 0.02 - 0.05**2) / n)
    assert result.low == pytest.approx(0.05 - 1.96 * sd, abs=0.01)
    assert result.high == pytest.approx(0.05 + 1.96 * sd, abs=0.01)
    assert mcnemar_exact(0, 0) == 1.0 and mcnemar_exact(20, 0) < 1e-5


def test_compare_command_and_its_refusals(tiny_dataset, capsys, monkeypatch, isolated_dirs):
    from tests.test_cli import run

    records = []
    for size in ("32", "8"):
        code, out, _ = run(["evaluate", "--model", "pixels", "--dataset", "tiny", "--k", "1,5",
                            "--image-size", size, size, "--json"], capsys, monkeypatch)  # fmt: skip
        assert code == 0
        records.append(json.loads(out))
    assert (
        set(records[0]["results"]["ci95"]) == {"1", "5"}
        and records[0]["results"]["bootstrap"]["seed"] == 0
    )
    low, high = records[0]["results"]["ci95"]["1"]
    assert low <= records[0]["results"]["recall"]["1"] <= high
    a, b = (r["run_id"] for r in records)
    code, out, _ = run(["compare", a, b, "--k", "1,5", "--json"], capsys, monkeypatch)
    assert code == 0
    rows = json.loads(out)["comparisons"]
    assert [r["k"] for r in rows] == [1, 5]
    assert rows[0]["recall_a"] == records[0]["results"]["recall"]["1"]
    assert rows[0]["recall_b"] == records[1]["results"]["recall"]["1"]
    code, out, _ = run(["compare", a, b], capsys, monkeypatch)
    assert code == 0 and "McNemar p" in out and "95% interval" in out
    # another policy: not the same denominator
    code, out, _ = run(["evaluate", "--model", "pixels", "--dataset", "tiny", "--k", "1",
                        "--no-positive-policy", "exclude", "--json"], capsys, monkeypatch)  # fmt: skip
    other = json.loads(out)["run_id"]
    code, _, err = run(["compare", a, other], capsys, monkeypatch)
    assert code == 1 and "count queries without positives differently" in err
    with pytest.raises(VPRBenchError, match="no such run record"):
        from vprbench.compare import load_run

        load_run("nope", isolated_dirs["results"])
