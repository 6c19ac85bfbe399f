"""Recipes (schema, grid, precedence), `vprbench ablate` (stage reuse, resume after a kill, failure
isolation) and `vprbench report` (tables equal to the run records, LaTeX that compiles, figures)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from tests.conftest import latex_compiles
from vprbench.ablate.recipe import load_recipe
from vprbench.ablate.run import run_recipe
from vprbench.ablate.variants import expand
from vprbench.errors import VPRBenchError

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path, text, name="r.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


BASE = """base:
  model: d2vpr
  protocols: [nordland-sample]
  image_size: [56, 112]
"""


@pytest.mark.parametrize(
    "text, match",
    [
        ("colour: red\n" + BASE, r"r.yaml:1: unknown key 'colour'; expected one of \['base'"),
        (BASE + "  speed: fast\n", r"r.yaml:5: unknown key 'speed'; expected one of"),
        (BASE + "  seeds: 3\n", r"r.yaml:5: 'seeds' must be a list of integers, got 3"),
        (
            BASE
            + "variants:\n  - name: gem guided\n    options: {aggregator: gem, tdda_guidance: true}\n",
            r"r.yaml:7: variant 'gem guided': tdda_guidance: true needs aggregator: tdda",
        ),
        (
            BASE + "variants:\n  - name: x\n    options: {drm: false, drm_levels: [8, 12]}\n",
            r"r.yaml:7: variant 'x': drm_levels needs drm: true",
        ),
        (
            BASE + "variants:\n  - name: x\n    options: {colour: red}\n",
            r"r.yaml:7: variant 'x': model 'd2vpr': unknown option\(s\) \['colour'\]",
        ),
        (
            BASE + "variants:\n  - name: x\n    options: {drm: 'no'}\n",
            r"option 'drm' must be bool, got 'no'",
        ),
        (BASE + "variants:\n  - name: a\n  - name: a\n", r"r.yaml:7: variant 'a' named twice"),
        (
            BASE + "  train: {data: nordland-train-sample, finetune: false}\n",
            r"train has neither distill nor finetune",
        ),
        (
            BASE + "  train: {data: nordland-train-sample, distill: {teacher: cricavpr}}\n",
            r"distill needs teacher_weights \(or allow_random_teacher",
        ),
        (
            BASE + "  train: {data: x, finetune: {epochs: 1, speed: 2}}\n",
            r"r.yaml:5: unknown key 'speed'; expected one of \['augment'",
        ),
        (
            BASE + "  weights: w.pth\n  train: {data: x, finetune: {}}\n",
            r"weights and train exclude each other",
        ),
        ("base: {model: nosuchmodel, protocols: [x]}\n", r"unknown model 'nosuchmodel'"),
        ("base: [1, 2]\n", r"'base' must be a mapping"),
        ("base: {protocols: [a]\n", r"not valid YAML"),
    ],
)
def test_bad_recipes_are_refused_with_file_and_line(tmp_path, text, match):
    with pytest.raises(VPRBenchError, match=match):
        load_recipe(write(tmp_path, text))


def test_grid_seeds_and_precedence(tmp_path):
    recipe = load_recipe(write(tmp_path, BASE + "  seeds: [0, 1]\n  options: {drm: true}\n"
                               "variants:\n  - {name: plain}\n"
                               "grid: {aggregator: [tdda, gem], drm: [true, false]}\n"))  # fmt: skip
    variants = expand(recipe)
    names = list(dict.fromkeys(v.name for v in variants))
    assert names == ["plain", "aggregator=tdda, drm=true", "aggregator=tdda, drm=false",
                     "aggregator=gem, drm=true", "aggregator=gem, drm=false"]  # fmt: skip
    assert len(variants) == 10 and [v.seed for v in variants[:2]] == [0, 1]
    gem_off = next(v for v in variants if v.name == "aggregator=gem, drm=false")
    assert gem_off.options["aggregator"] == "gem" and gem_off.options["drm"] is False
    assert gem_off.image_size == (56, 112) and gem_off.protocols == ("nordland-sample",)
    # --set beats variant beats base
    forced = expand(recipe, {"options.drm": False, "image_size": [28, 28]})
    assert all(v.options["drm"] is False and v.image_size == (28, 28) for v in forced)


def test_shipped_recipes_are_valid():
    names = sorted(p.name for p in (REPO / "recipes").glob("*.yaml"))
    assert names == ["distill.yaml", "drm.yaml", "full.yaml", "quickstart.yaml", "tdda.yaml"]
    for path in (REPO / "recipes").glob("*.yaml"):
        assert expand(load_recipe(path)), path


TINY = """name: {name}
base:
  model: dinov2-gem
  options: {{backbone: vits14}}
  protocols: [nordland-sample]
  image_size: [28, 28]
  profile: false
  train:
    data: nordland-train-sample
    finetune: {{epochs: 1, max_steps: {steps}, places_per_batch: 4, images_per_place: 2,
               warmup_steps: 0, augment: none}}
variants:
  - name: trained
  - name: untrained
    train: null
"""


def test_stages_are_reused_across_recipes_and_never_repeated(tmp_path, isolated_dirs):
    results = isolated_dirs["results"]
    first = run_recipe(load_recipe(write(tmp_path, TINY.format(name="one", steps=2), "one.yaml")),
                       results, say=lambda m: None)  # fmt: skip
    assert [o.error for o in first] == [None, None]
    (folder,) = (results / "train").iterdir()
    mtime = (folder / "last.pth").stat().st_mtime_ns
    said = []
    second = run_recipe(load_recipe(write(tmp_path, TINY.format(name="two", steps=2), "two.yaml")),
                        results, say=said.append)  # fmt: skip
    assert [o.error for o in second] == [None, None]
    assert any("finetune: cached" in m for m in said)
    assert (folder / "last.pth").stat().st_mtime_ns == mtime and len(
        list((results / "train").iterdir())
    ) == 1
    # each record names its recipe and variant; the two recipes' records hold the same recall
    records = [json.loads(Path(p).read_text()) for o in first + second for p in o.records]
    assert {(r["ablation"]["recipe"], r["ablation"]["variant"]) for r in records} == {
        ("one", "trained"),
        ("one", "untrained"),
        ("two", "trained"),
        ("two", "untrained"),
    }
    assert records[0]["results"]["recall"] == records[2]["results"]["recall"]
    assert records[0]["results"]["recall"] != records[1]["results"]["recall"]


def test_a_failing_variant_does_not_stop_the_others(tmp_path, capsys, monkeypatch, isolated_dirs):
    from tests.test_cli import run

    path = write(tmp_path, TINY.format(name="mixed", steps=1)
                 + "  - name: broken\n    train: null\n    protocols: [not-formatted-anywhere]\n")  # fmt: skip
    code, out, err = run(["ablate", str(path)], capsys, monkeypatch)
    assert code == 1
    assert "FAILED: VPRBenchError: unknown dataset 'not-formatted-anywhere'" in out
    assert "2 of 3 runs succeeded" in out
    state = json.loads((isolated_dirs["results"] / "ablations" / "mixed.json").read_text())
    assert [o["error"] is None for o in state["outcomes"]] == [True, True, False]
    code, out, _ = run(["ablate", str(path), "--dry-run"], capsys, monkeypatch)
    assert (
        code == 0
        and "train finetune: cached" in out
        and "evaluate on nordland-sample: cached" in out
    )


def test_an_ablation_killed_during_training_resumes(tmp_path, isolated_dirs):
    text = TINY.format(name="killme", steps=6).replace(
        "augment: none", "augment: none, checkpoint_every: 1"
    )
    path = write(tmp_path, text)
    env = {**os.environ, "VPRBENCH_FAULT_SLEEP_PER_STEP": "1"}
    cmd = [sys.executable, "-m", "vprbench", "ablate", str(path)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and not list(
        (isolated_dirs["results"] / "train").glob("*/last.pth")
    ):
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    (folder,) = (isolated_dirs["results"] / "train").iterdir()
    assert (folder / "last.pth").is_file() and not (folder / "summary.json").exists()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "finetune: resuming" in done.stdout and "2 of 2 runs succeeded" in done.stdout
    assert (
        json.loads(next((isolated_dirs["results"] / "train").glob("*/summary.json")).read_text())[
            "steps"
        ]
        == 6
    )


def test_report_tables_equal_the_records_and_latex_compiles(
    tmp_path, capsys, monkeypatch, isolated_dirs
):
    from tests.test_cli import run

    path = write(
        tmp_path, TINY.format(name="rep", steps=1).replace("profile: false", "profile: true")
    )
    outcomes = run_recipe(load_recipe(path), isolated_dirs["results"], say=lambda m: None)
    out = tmp_path / "report"
    code, stdout, err = run(["report", "--latex", "--markdown", "--csv", "--recipe", "rep", "--out",
                             str(out), "--queries", "0,3"], capsys, monkeypatch)  # fmt: skip
    assert code == 0, err
    records = {json.loads(Path(p).read_text())["ablation"]["variant"]: json.loads(Path(p).read_text())
               for o in outcomes for p in o.records}  # fmt: skip
    csv = pd.read_csv(out / "rep.csv")
    for _, row in csv.iterrows():
        recall = records[row["variant"]]["results"]["recall"]
        assert row["R@1"] == pytest.approx(100 * recall["1"]) and row["R@10"] == pytest.approx(
            100 * recall["10"]
        )
        assert row["gflops"] > 0 and row["params_m"] > 0
    tex = (out / "rep.tex").read_text()
    best = max(records.values(), key=lambda r: r["results"]["recall"]["1"])
    assert "\\toprule" in tex and "\\bottomrule" in tex and "\\bfseries" in tex
    assert f"{100 * best['results']['recall']['1']:.1f}" in tex
    assert "nordland-sample" in tex and "untrained*" in tex  # random init marked
    md = (out / "rep.md").read_text()
    assert "| trained" in md and f"{100 * records['trained']['results']['recall']['5']:.1f}" in md
    for name in ("recall_at_k_nordland-sample", "r1_vs_gflops_nordland-sample", "training_curves",
                 "mosaic_trained_nordland_sample"):  # fmt: skip
        assert (out / f"{name}.png").stat().st_size > 0 and (out / f"{name}.pdf").is_file()
    if not latex_compiles(out / "rep.tex", tmp_path):
        pytest.skip("pdflatex not installed (apt-get install texlive-latex-recommended)")


def test_quickstart_recipe_end_to_end(isolated_dirs, tmp_path):
    # What CI runs of the shipped recipes: every stage and switch on the embedded data, then the report.
    from vprbench.report.write import write_report

    recipe = load_recipe(REPO / "recipes" / "quickstart.yaml")
    outcomes = run_recipe(recipe, isolated_dirs["results"], say=lambda m: None)
    assert [o.error for o in outcomes] == [None] * len(expand(recipe)) and len(outcomes) == 12
    trained = {
        o.variant.name: json.loads(Path(o.records[0]).read_text())["ablation"]["train"]
        for o in outcomes
    }
    assert len(trained["distill + finetune"]) == 2 and trained["no training"] == []
    # a finished stage keeps its weights, not the optimiser state: the disk --dry-run announced
    from vprbench.ablate.disk import stage_bytes
    from vprbench.ablate.run import training_plan

    stages = {
        p.folder: p for v in expand(recipe) for p in training_plan(v, isolated_dirs["results"])
    }
    assert len(stages) == 11
    for folder, plan in stages.items():
        used = sum(f.stat().st_size for f in folder.iterdir())
        expected = stage_bytes(plan.stage, plan.config)[0]
        assert expected <= used <= 1.01 * expected + 100_000, (folder, used, expected)
        assert "optimizer_state_dict" not in torch.load(folder / "last.pth", weights_only=True)
    paths = write_report(isolated_dirs["results"], tmp_path / "report", ["latex", "markdown", "csv"],
                         recipe="quickstart", queries=[0, 200])  # fmt: skip
    table = pd.read_csv(tmp_path / "report" / "quickstart.csv")
    assert len(table) == 12 and table["gflops"].notna().all()
    # every variant starts from random weights (init: random, a random teacher, or no training)
    assert table["random_init"].all()
    tex = (tmp_path / "report" / "quickstart.tex").read_text()
    assert tex.startswith(
        "% Written by vprbench report. Needs in the preamble: \\usepackage{booktabs}"
    )
    assert tex.index("\\end{tabular}") < tex.index("\\caption{") < tex.index("\\end{table}")
    assert tex.count("* [") == 12 and "Rows marked * start from random weights" in tex
    assert any(p.name == "r1_vs_gflops_nordland-sample.pdf" for p in paths)


def test_seeds_give_mean_and_spread_and_names_are_escaped():
    from vprbench.report.tables import caption, recall_table, to_latex, to_markdown

    rows = []
    for variant, seed, r1 in (
        ("A_1 & co", 0, 10.0),
        ("A_1 & co", 1, 14.0),
        ("B", 0, 20.0),
        ("B", 1, 20.0),
    ):
        rows.append({"recipe": "x", "variant": variant, "seed": seed, "order": 0 if variant == "B" else 1,
                     "model": "m", "protocol": "sped", "image_size": "224x224", "batch_size": None,
                     "pca": None, "policy": "miss", "random_init": False, "params_m": 1.0, "gflops": 1.0,
                     "latency_ms": 1.0, "train_steps": 0, "record": "r", "R@1": r1, "R@5": r1 + 1,
                     "R@10": r1 + 2})  # fmt: skip
    df = pd.DataFrame(rows)
    table = recall_table(df)
    assert table.loc["A_1 & co", ("sped", "R@1")] == 12.0
    assert table.attrs["std"].loc["A_1 & co", ("sped", "R@1")] == pytest.approx(2 * 2**0.5)
    tex = to_latex(df)
    assert "A\\_1 \\& co & 12.0 $\\pm$ 2.8" in tex and "\\bfseries 20.0 $\\pm$ 0.0" in tex
    assert "Mean over training seeds (n = 2) $\\pm$ their sample standard deviation" in caption(df)
    assert "| A_1 & co | 12.0 ± 2.8" in to_markdown(df).replace("  ", " ")


def test_report_shows_the_bootstrap_intervals_with_ci():
    from vprbench.report.tables import to_latex, to_markdown

    rows = [{"recipe": "x", "variant": v, "seed": 0, "order": i, "model": "m", "protocol": "sped",
             "image_size": "224x224", "batch_size": None, "pca": None, "policy": "miss",
             "random_init": False, "params_m": 1.0, "gflops": 1.0, "latency_ms": 1.0, "train_steps": 0,
             "record": "r", "R@1": r1, "R@1 low": r1 - 2, "R@1 high": r1 + 2, "R@5": np.nan,
             "R@5 low": np.nan, "R@5 high": np.nan, "R@10": np.nan, "R@10 low": np.nan, "R@10 high": np.nan}
            for i, (v, r1) in enumerate((("A", 12.0), ("B", 20.0)))]  # fmt: skip
    df = pd.DataFrame(rows)
    assert "12.0 [10.0, 14.0]" in to_latex(df, ci=True)
    assert "In brackets: the 95\\% interval over queries" in to_latex(df, ci=True)
    assert "| A | 12.0 [10.0, 14.0]" in to_markdown(df, ci=True).replace("  ", " ").replace(
        "  ", " "
    )
    assert "[10.0" not in to_latex(df)


def test_report_keeps_the_newest_record_by_its_created_time_not_the_file_time(tmp_path):
    """A copy or checkout sets file times in copy order: the record's own 'created' decides."""
    import json
    import os

    from vprbench.report.records import load_records

    runs = tmp_path / "runs"
    runs.mkdir()
    base = {"protocol": {"name": "sped"}, "results": {}, "settings": {},
            "ablation": {"recipe": "r", "variant": "v", "seed": 0}}  # fmt: skip
    newer = {**base, "run_id": "a", "created": "2025-06-02T10:00:00.000001+00:00"}
    older = {**base, "run_id": "b", "created": "2025-01-01T10:00:00+0000"}  # the old format
    (runs / "a.json").write_text(json.dumps(newer))
    (runs / "b.json").write_text(json.dumps(older))
    os.utime(runs / "a.json", (1_000_000, 1_000_000))  # the newer record has the older file time
    (kept,) = load_records(tmp_path)
    assert kept["run_id"] == "a"
    # within one second, microseconds decide
    (runs / "b.json").write_text(
        json.dumps({**older, "created": "2025-06-02T10:00:00.000002+00:00"})
    )
    (kept,) = load_records(tmp_path)
    assert kept["run_id"] == "b"
    (runs / "b.json").write_text(json.dumps({**older, "created": "yesterday"}))
    with pytest.raises(VPRBenchError, match=r"b.json: 'created' must be an ISO 8601 time"):
        load_records(tmp_path)


def test_a_report_row_is_one_configuration(capsys, monkeypatch, isolated_dirs):
    """Three `evaluate` runs of one model (exact, PCA 8, HNSW) are three rows, each with its own
    record's R@1, labelled by what differs; they were averaged into one row named after the model."""
    import json

    from tests.test_cli import run
    from vprbench.report.records import frame, load_records
    from vprbench.report.tables import recall_table, to_csv

    args = ["evaluate", "--model", "pixels", "--dataset", "nordland-sample", "--k", "1,5", "--json"]
    recalls = {}
    for extra in ([], ["--pca", "8", "--pca-fit", "nordland-sample"], ["--search", "hnsw"]):
        code, out, err = run([*args, *extra], capsys, monkeypatch)
        assert code == 0, err
        record = json.loads(out)
        recalls[record["run_id"]] = 100 * record["results"]["recall"]["1"]
    df = frame(load_records(isolated_dirs["results"]))
    table = recall_table(df)
    assert set(table.index) == {
        "pixels (pca none, search exact, dim 3072)",
        "pixels (pca 8, search exact, dim 8)",
        "pixels (pca none, search hnsw, dim 3072)",
    }
    for _, row in df.iterrows():
        assert table.loc[row["variant"], ("nordland-sample", "R@1")] == recalls[row["run_id"]]
    assert len(set(recalls.values())) > 1  # the runs really differ: no row may average them
    csv = to_csv(df).splitlines()[0].split(",")
    assert {"run_id", "search", "per_city", "dim"} <= set(csv)


def test_bold_goes_to_every_printed_best_value():
    """90.36 and 90.44 both print as 90.4: both are bold (only the unrounded larger one was)."""
    from vprbench.report.tables import to_latex

    rows = [{"recipe": "x", "variant": v, "seed": 0, "order": i, "model": "m", "protocol": "sped",
             "image_size": "224x224", "batch_size": None, "pca": None, "policy": "miss",
             "random_init": False, "params_m": 1.0, "gflops": 1.0, "latency_ms": 1.0,
             "train_steps": 0, "record": "r", "R@1": r1, "R@5": 95.0, "R@10": 96.0}
            for i, (v, r1) in enumerate((("A", 90.36), ("B", 90.44), ("C", 80.0)))]  # fmt: skip
    tex = to_latex(pd.DataFrame(rows))
    assert "A & \\bfseries 90.4" in tex and "B & \\bfseries 90.4" in tex
    assert "C & 80.0" in tex


def test_mixed_input_sizes_are_marked_and_never_share_a_front():
    from vprbench.report.figures import fronts_by_size
    from vprbench.report.tables import caption, to_markdown

    rows = [{"recipe": "x", "variant": v, "seed": 0, "order": i, "model": "m", "protocol": "sped",
             "image_size": size, "batch_size": None, "pca": None, "policy": "miss",
             "random_init": False, "params_m": 1.0, "gflops": g, "latency_ms": 1.0,
             "train_steps": 0, "record": "r", "R@1": r1, "R@5": 95.0, "R@10": 96.0}
            for i, (v, size, g, r1) in enumerate((("A", "224x224", 4.0, 80.0),
                                                  ("B", "168x168", 1.0, 70.0),
                                                  ("C", "224x224", 6.0, 85.0),
                                                  ("D", "224x224", 5.0, 60.0)))]  # fmt: skip
    df = pd.DataFrame(rows)
    text = to_markdown(df)
    assert "| A [224x224]" in text and "| B [168x168]" in text
    assert "Input each row's in brackets" in caption(df, latex=False)
    fronts = fronts_by_size(df, "gflops")
    # B (cheapest) would dominate nothing at 224x224: A and C form that size's front, B its own
    assert {s: list(df["variant"].iloc[f]) for s, f in fronts.items()} == {
        "224x224": ["A", "C"], "168x168": ["B"]}  # fmt: skip
    single = df[df["image_size"] == "224x224"]
    assert "[224x224]" not in to_markdown(single) and "Input 224x224" in caption(single)
