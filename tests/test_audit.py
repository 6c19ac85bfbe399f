"""`vprbench audit`: one setting changed at a time, each difference checked against an independent
computation from the predictions on disk (numpy hits, scipy's exact binomial test)."""

import json
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import binomtest

from tests.test_cli import run
from vprbench.datasets.formatted import load_formatted
from vprbench.evaluate.audit import alternative_size
from vprbench.evaluate.metrics import sign_flip_pvalue
from vprbench.paths import data_root


def _hits(record: dict, positives, k: int) -> np.ndarray:
    """Per-query hit at k, from the saved top-K indices (not from the saved ranks)."""
    with np.load(record["files"]["predictions"]) as z:
        top = z["indices"][:, :k]
    return np.array([np.isin(row, pos).any() for row, pos in zip(top, positives, strict=True)])


def _check_row(row: dict, base: dict, positives, blocks: int | None = None) -> dict:
    """The row's numbers against the two run records and their predictions (``blocks``: the
    protocol's moving-block length, None for independent queries)."""
    variant = json.loads(Path(row["record"]).read_text())
    for c in row["comparisons"]:
        k = c["k"]
        assert c["recall"] == variant["results"]["recall"][str(k)]
        assert c["baseline"] == base["results"]["recall"][str(k)]
        assert c["difference"] == pytest.approx(c["recall"] - c["baseline"])
        a, b = _hits(variant, positives, k), _hits(base, positives, k)
        assert c["recall"] == pytest.approx(a.mean())
        only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
        assert (c["only_audited"], c["only_baseline"]) == (only_a, only_b)
        n = only_a + only_b
        if blocks is None:
            assert c["p_value"] == pytest.approx(1.0 if n == 0 else binomtest(only_a, n).pvalue)
        else:  # the sign-flip test over consecutive blocks of the protocol's length
            d = a.astype(int) - b.astype(int)
            sums = np.add.reduceat(d, np.arange(0, d.size, blocks))
            assert c["p_value"] == pytest.approx(sign_flip_pvalue(sums))
        assert c["p_holm"] >= c["p_value"]  # Holm (checked against a hand computation below)
        assert c["significant"] == (c["p_holm"] < 0.05)
        assert c["low"] <= c["difference"] <= c["high"]
    return variant


def test_audit_on_the_embedded_sample(capsys, monkeypatch, isolated_dirs):
    code, out, err = run(["audit", "--model", "pixels", "--dataset", "nordland-sample",
                          "--pca-dim", "256", "--json"], capsys, monkeypatch)  # fmt: skip
    assert code == 0, err
    record = json.loads(out)
    positives = load_formatted("nordland-sample", data_root()).positives
    base = json.loads(Path(record["baseline"]["record"]).read_text())
    assert base["settings"]["preprocess"]["image_size"] == [32, 32]
    rows = {r["setting"]: r for r in record["rows"]}
    assert list(rows) == [
        "image-size", "interpolation", "resize", "normalisation", "dtype", "pca", "search"]  # fmt: skip
    expected = {
        "image-size": lambda v: v["settings"]["preprocess"]["image_size"] == [48, 48],
        "interpolation": lambda v: v["settings"]["preprocess"]["interpolation"] == "bicubic",
        "resize": lambda v: (
            (v["settings"]["preprocess"]["resize"], v["settings"]["preprocess"]["antialias"])
            == ("normalised", False)
        ),
        "normalisation": lambda v: v["settings"]["preprocess"]["mean"] == [0.485, 0.456, 0.406],
        "dtype": lambda v: v["settings"]["dtype"] == "bf16",
        "pca": lambda v: v["settings"]["pca"]["dim"] == 256 and v["model"]["descriptor_dim"] == 256,
        "search": lambda v: not v["settings"]["search"]["exact"],
    }
    from vprbench.evaluate.metrics import holm

    tested = [c for row in record["rows"] for c in row["comparisons"]]
    assert [c["p_holm"] for c in tested] == holm([c["p_value"] for c in tested])
    assert record["statistics"]["multiple_comparisons"].startswith(
        f"Holm-Bonferroni over the {len(tested)} tests"
    )
    for name, row in rows.items():
        variant = _check_row(row, base, positives, blocks=10)  # nordland-sample: blocks of 10
        assert expected[name](variant), name
        assert variant["protocol"]["gt_digest"] == base["protocol"]["gt_digest"]
    skipped = {s["setting"]: s["reason"] for s in record["skipped"]}
    assert set(skipped) == {"batch-size", "batch-order", "policy"}
    assert "not batch-dependent" in skipped["batch-size"]
    assert "every query has a positive" in skipped["policy"]
    # the human-readable table went to stderr, whole; the record is on disk
    for header in (
        "setting",
        "baseline",
        "audited",
        "R@1",
        "ΔR@1 [95%]",
        "p Holm (R@1)",
        "p Holm (R@5)",
        "multiple comparisons: Holm-Bonferroni",
    ):
        assert header in err
    assert "…" not in err and "not audited: policy" in err
    path = isolated_dirs["results"] / "audits" / f"{record['audit_id']}.json"
    assert json.loads(path.read_text())["rows"] == record["rows"]
    # again: everything from the cache, the same numbers (HNSW included)
    code, out, _ = run(["audit", "--model", "pixels", "--dataset", "nordland-sample",
                        "--pca-dim", "256", "--json"], capsys, monkeypatch)  # fmt: skip
    assert code == 0 and json.loads(out)["rows"] == record["rows"]


def test_audit_of_a_batch_dependent_model(
    tmp_path, capsys, monkeypatch, batchmean_model, isolated_dirs
):
    from tests.test_extract import _sped_like

    ds = _sped_like(tmp_path)  # the official SPED batch size of the d2vpr convention is 3
    code, out, err = run(["audit", "--model", batchmean_model, "--dataset", "sped", "--k", "1",
                          "--only", "batch-size,batch-order,policy"], capsys, monkeypatch)  # fmt: skip
    assert code == 0, err
    (path,) = (isolated_dirs["results"] / "audits").glob("*.json")
    record = json.loads(path.read_text())
    base = json.loads(Path(record["baseline"]["record"]).read_text())
    assert base["settings"]["batch_size"] == 3
    rows = record["rows"]
    assert [(r["setting"], r["audited"]) for r in rows] == [
        ("batch-size", "1"),
        ("batch-size", "6"),
        ("batch-order", "shuffled batches of 3 (seed 0)"),
    ]
    for row, size in zip(rows, (1, 6, 3), strict=True):
        variant = _check_row(row, base, ds.positives)
        assert variant["settings"]["batch_size"] == size
    assert "batch-order" in out and "shuffled batches of 3" in out
    assert record["skipped"] == [
        {"setting": "policy", "reason": "every query has a positive: the policy changes nothing"}
    ]


def test_the_no_positive_policy_row_is_exact_not_tested(tiny_dataset, capsys, monkeypatch):
    code, out, err = run(["audit", "--model", "pixels", "--dataset", "tiny", "--k", "1,5",
                          "--only", "policy", "--json"], capsys, monkeypatch)  # fmt: skip
    assert code == 0, err
    (row,) = json.loads(out)["rows"]
    # query 5 of 6 has no positive; the other five are found at rank 1 (noisy copies)
    one = row["comparisons"][0]
    assert (one["baseline"], one["recall"]) == (5 / 6, 1.0)
    assert one["difference"] == pytest.approx(1 / 6) and one["p_value"] is None
    assert row["test"].startswith("none: the same hits counted over 5 instead of 6 queries")
    assert "(exact)" in err and "n/a" in err


def test_audit_refusals(tiny_dataset, capsys, monkeypatch):
    code, _, err = run(["audit", "--model", "pixels", "--dataset", "tiny", "--only", "colour"],
                       capsys, monkeypatch)  # fmt: skip
    assert code == 1 and "--only: unknown setting 'colour'" in err
    code, _, err = run(["audit", "--model", "pixels", "--dataset", "tiny", "--k", "1,x"],
                       capsys, monkeypatch)  # fmt: skip
    assert code == 1 and "--k expects positive integers" in err


def test_alternative_image_size_keeps_the_patch_grid():
    assert alternative_size((224, 224)) == (336, 336)
    assert alternative_size((322, 322)) == (490, 490)  # 23 -> 35 patches of 14
    assert alternative_size((32, 32)) == (48, 48)
