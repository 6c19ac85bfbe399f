"""`report` tables: settings that differ between rows are shown per row, LaTeX layout (label, alignment,
rules), tests across seeds with Holm's correction, records no longer in the recipe left out."""

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import latex_compiles


def _row(variant, order=0, seed=0, r1=50.0, **extra):
    return {"recipe": "x", "variant": variant, "seed": seed, "order": order, "model": "m",
            "protocol": "sped", "image_size": "224x224", "batch_size": None, "pca": None,
            "search": "exact", "dtype": "fp32", "per_city": False, "policy": "miss",
            "random_init": False, "params_m": 1.0, "gflops": 1.0, "latency_ms": 1.0,
            "train_steps": 0, "record": "r", "R@1": r1, "R@5": r1 + 5, "R@10": r1 + 8,
            **extra}  # fmt: skip


def test_settings_that_differ_between_variants_are_shown_per_row():
    from vprbench.report.tables import caption, to_markdown

    df = pd.DataFrame([_row("A", 0, r1=60.0), _row("B", 1, r1=50.0, pca=8.0),
                       _row("C", 2, r1=55.0, search="hnsw")])  # fmt: skip
    md = to_markdown(df)
    assert "| A [no PCA, exact search]" in md and "| B [PCA 8, exact search]" in md
    assert "| C [no PCA, hnsw search]" in md
    text = caption(df, latex=False)
    assert "PCA each row's in brackets; search each row's in brackets" in text
    assert "Input 224x224" in text  # shared: stated once
    same = pd.DataFrame([_row("A", 0), _row("B", 1, pca=None)])
    assert "[" not in to_markdown(same).split("\n\n")[0] and "PCA none" in caption(same)


def test_latex_layout_label_alignment_and_rules(tmp_path):
    from vprbench.report.tables import to_latex

    rows = [_row("A", 0, r1=60.0), _row("B", 1, r1=50.0)]
    rows += [{**r, "protocol": "msls-val"} for r in rows]
    tex = to_latex(pd.DataFrame(rows), label="tab:drm")
    assert tex.count("\\label{") == 1 and "\\label{tab:drm}" in tex
    assert "\\begin{tabular}{lrrrrrr}" in tex  # numbers right-aligned
    assert "\\cmidrule(lr){2-4} \\cmidrule(lr){5-7}" in tex
    assert "protocol" not in tex and "metric" not in tex  # no stub header
    # the packages it needs, said at the top; the caption below the rules, where LaTeX leaves room
    assert tex.splitlines()[0].startswith("% Written by vprbench report. Needs in the preamble: ")
    assert "\\usepackage{booktabs}" in tex.splitlines()[0]
    lines = tex.splitlines()
    assert lines.index("\\bottomrule") < lines.index("\\end{tabular}")
    assert lines.index("\\end{tabular}") + 1 == next(
        i for i, line in enumerate(lines) if line.startswith("\\caption{")
    )
    path = tmp_path / "t.tex"
    path.write_text(tex)
    if not latex_compiles(path, tmp_path):
        pytest.skip("pdflatex not installed")


def test_several_seeds_are_tested_across_seeds_with_holm_over_the_cells():
    """Welch's t-test worked out by hand, then Holm over the report's cells."""
    from scipy.stats import t as student

    from vprbench.evaluate.metrics import holm
    from vprbench.report.tables import against_baseline, caption, to_markdown

    base, a, b = [70.0, 72.0, 71.0], [50.0, 53.0, 56.0], [70.5, 71.5, 72.5]
    rows = [_row("base", 0, s, v) for s, v in enumerate(base)]
    rows += [_row("A", 1, s, v) for s, v in enumerate(a)]
    rows += [_row("B", 2, s, v) for s, v in enumerate(b)]
    df = against_baseline(pd.DataFrame(rows), "base")

    def welch(x, y):
        vx, vy = np.var(x, ddof=1) / len(x), np.var(y, ddof=1) / len(y)
        t = (np.mean(x) - np.mean(y)) / np.sqrt(vx + vy)
        dof = (vx + vy) ** 2 / (vx**2 / (len(x) - 1) + vy**2 / (len(y) - 1))
        return 2 * student.sf(abs(t), dof)

    # R@5 and R@10 are R@1 shifted: the same test at every k, 2 variants x 3 k = 6 cells
    p = {"A": welch(a, base), "B": welch(b, base)}
    adjusted = holm([p["A"], p["B"]] * 3)
    first = df.drop_duplicates("variant").set_index("variant")
    for name, q in zip(("A", "B"), adjusted[:2], strict=True):
        assert first.loc[name, "R@1 p"] == pytest.approx(p[name])
        assert first.loc[name, "R@5 p_holm"] == pytest.approx(q)
    assert p["A"] < 0.05 and adjusted[0] < 0.05 and adjusted[1] >= 0.05
    md = to_markdown(df)
    assert re.search(r"\| B +\| +71\.5 ± 1\.0† ", md) and re.search(r"\| A +\| +53\.0 ± 3\.0 ", md)
    text = caption(df, latex=False)
    assert "Welch's t-test across seeds" in text and "Holm-Bonferroni over the 6 cells" in text
    assert "Mean over training seeds (n = 3) ± their sample standard deviation (ddof 1)" in text
    # one seed against three: not tested, and said so
    mixed = against_baseline(pd.DataFrame(rows[:4]), "base")
    assert mixed["R@1 p"].isna().all()
    assert "‡: not tested (3 cell(s): one seed on one side" in caption(mixed, latex=False)
    assert re.search(r"\| A +\| +50\.0‡ ", to_markdown(mixed))  # marked, not read as significant
    # seeds that all give the same recall on both sides: scipy's Welch says p = 0, nothing is tested
    constant = [_row("base", 0, s, 70.0) for s in range(3)] + [
        _row("C", 1, s, 72.0) for s in range(3)
    ]
    flat = against_baseline(pd.DataFrame(constant), "base")
    assert flat["R@1 p"].isna().all() and "‡" in to_markdown(flat)
    # uncorrected on request
    plain = against_baseline(pd.DataFrame(rows), "base", correction="none")
    assert "p_holm" not in " ".join(plain.columns) and "uncorrected" in caption(plain)


def _record(results, variant, seed, created, recall):
    run_id = f"m__sped__{variant.replace(' ', '')}{seed}"
    record = {"run_id": run_id, "created": created, "protocol": {"name": "sped"},
              "model": {"name": "m", "options": {}, "descriptor_dim": 4, "batch_dependent": False,
                        "weights": {"random_init": False, "sha256": None}},
              "settings": {"preprocess": {"image_size": [8, 8]}, "dtype": "fp32", "batch_size": 1,
                           "no_positive_policy": "miss", "per_city": False,
                           "search": {"kind": "exact"}, "pca": None},
              "results": {"recall": {"1": recall}, "ci95": {}},
              "ablation": {"recipe": "rec", "variant": variant, "seed": seed, "variant_index": 0}}  # fmt: skip
    path = results / "runs" / f"{run_id}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))
    return str(path)


def test_records_no_longer_in_the_recipe_or_failed_are_left_out_and_listed(tmp_path):
    from vprbench.report.records import load_records

    recipe = tmp_path / "rec.yaml"
    recipe.write_text("name: rec\nbase:\n  model: pixels\n  protocols: [sped]\n"
                      "variants:\n  - name: kept\n  - name: broken\n")  # fmt: skip
    results = tmp_path / "results"
    kept = _record(results, "kept", 0, "2026-01-01T10:00:00+00:00", 0.5)
    removed = _record(results, "renamed away", 0, "2026-01-01T10:00:00+00:00", 0.9)
    broken = _record(results, "broken", 0, "2026-01-01T09:00:00+00:00", 0.7)
    outcomes = [
        {"key": "a", "variant": "kept", "seed": 0, "records": [kept], "error": None},
        {"key": "b", "variant": "renamed away", "seed": 0, "records": [removed], "error": None},
        {"key": "c", "variant": "broken", "seed": 0, "records": [broken], "error": None},
        {"key": "d", "variant": "broken", "seed": 0, "records": [], "error": "RuntimeError: boom"},
    ]  # the later run of 'broken' failed: its older record is not the recipe's current result
    (results / "ablations").mkdir()
    (results / "ablations" / "rec.json").write_text(
        json.dumps({"recipe": "rec", "file": str(recipe), "outcomes": outcomes})
    )
    left_out: list[dict] = []
    records = load_records(results, recipe="rec", left_out=left_out)
    assert [r["ablation"]["variant"] for r in records] == ["kept"]
    reasons = {item["variant"]: item["reason"] for item in left_out}
    assert reasons["renamed away"] == f"no longer in {recipe}"
    assert reasons["broken"] == "its last run failed (RuntimeError: boom)"
    # the results folder moved (a copy, an archive): records are matched by file name
    moved = tmp_path / "moved"
    Path(results).rename(moved)
    assert [r["ablation"]["variant"] for r in load_records(moved, recipe="rec")] == ["kept"]


def _figures(monkeypatch):
    """Capture the figures the report would save: {name: matplotlib figure}."""
    import vprbench.report.figures as report

    figures = {}

    def keep(fig, out, name):
        figures[name] = fig
        return []

    monkeypatch.setattr(report, "_save", keep)
    return figures


def test_figures_keep_the_table_order_distinct_styles_k_ticks_and_error_bars(tmp_path, monkeypatch):
    from vprbench.report.figures import efficiency, recall_curves, series_styles

    names = [f"variant {i}" for i in range(12)]
    rows = []
    for i, name in enumerate(names):
        row = _row(name, order=i, r1=30.0 + i, gflops=1.0 + 0.01 * i)
        for k, r in ((1, 30.0 + i), (5, 40.0 + i), (10, 45.0 + i), (20, 50.0 + i)):
            row |= {f"R@{k}": r, f"R@{k} low": r - 2, f"R@{k} high": r + 3}
        rows.append(row)
    df = pd.DataFrame(rows[::-1]).sort_values("order")  # file order differs from the recipe's
    figures = _figures(monkeypatch)
    recall_curves(df, tmp_path)
    ax = figures["recall_at_k_sped"].axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == names
    assert list(ax.get_xticks()) == [1, 5, 10, 20]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "5", "10", "20"]
    lines = [c.lines[0] for c in ax.containers]
    styles = {(tuple(line.get_color()), line.get_marker()) for line in lines}
    assert len({s[0] for s in styles}) == 12 and len(styles) == 12  # no colour used twice
    # error bars from the intervals: 2 below and 3 above each point
    bars = ax.containers[0].lines[2][0].get_segments()
    assert [round(float(seg[0][1]), 6) for seg in bars] == [28.0, 38.0, 43.0, 48.0]
    assert [round(float(seg[1][1]), 6) for seg in bars] == [33.0, 43.0, 48.0, 53.0]
    assert len({(tuple(s["color"]), s["marker"], s["linestyle"]) for s in series_styles(25)}) == 25
    efficiency(df, tmp_path)
    ax = figures["r1_vs_gflops_sped"].axes[0]
    assert not ax.texts  # no labels on the plot to overlap: a legend, in table order
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[0] == "Pareto front" and labels[1:] == names


def test_training_curves_one_panel_per_stage_and_shared_runs_name_every_variant(
    tmp_path, monkeypatch
):
    from vprbench.report.figures import training_curves

    def stage(name, losses):
        folder = tmp_path / name
        folder.mkdir()
        lines = [json.dumps({"step": i + 1, "loss": x}) for i, x in enumerate(losses)]
        (folder / "metrics.jsonl").write_text("\n".join(lines) + "\n")
        return str(folder)

    distill = stage("distill-aaa", [1e-4, 5e-5])
    tuned = stage("finetune-bbb", [1.4, 1.3, 1.2])
    records = [
        {
            "ablation": {
                "variant": "distill + finetune",
                "variant_index": 0,
                "train": [distill, tuned],
            }
        },
        {"ablation": {"variant": "distill only", "variant_index": 1, "train": [distill]}},
    ]
    figures = _figures(monkeypatch)
    training_curves(records, tmp_path)
    axes = figures["training_curves"].axes
    assert [ax.get_title() for ax in axes] == ["stage: distill", "stage: finetune"]
    legend = [t.get_text() for t in axes[0].get_legend().get_texts()]
    assert legend == ["distill + finetune, distill only"]  # one run, both variants named
    assert all(float(t).is_integer() for t in axes[1].get_xticks())


def test_backbone_only_weights_are_marked_as_partly_random(tmp_path):
    from vprbench.report.records import frame, load_records
    from vprbench.report.tables import caption, to_markdown

    results = tmp_path / "results"
    for variant, kind in (("trained", "full"), ("DINOv2 only", "backbone-init")):
        path = Path(_record(results, variant, 0, "2026-01-01T10:00:00+00:00", 0.5))
        record = json.loads(path.read_text())
        record["model"]["weights"]["kind"] = kind
        record["ablation"]["variant_index"] = 0 if kind == "full" else 1
        path.write_text(json.dumps(record))
    df = frame(load_records(results))
    md = to_markdown(df)
    assert "| DINOv2 only* " in md and "| trained " in md
    assert "or with backbone-only weights (the DRM and aggregator random)" in caption(
        df, latex=False
    )


def test_a_figure_saved_twice_is_the_same_bytes(tmp_path):
    """No creation date in the PDFs: re-running a report changes no figure that did not change."""
    from vprbench.report.figures import recall_curves

    df = pd.DataFrame([_row("A", 0, r1=60.0), _row("B", 1, r1=50.0)])
    first = {p.name: p.read_bytes() for p in recall_curves(df, tmp_path)}
    second = {p.name: p.read_bytes() for p in recall_curves(df, tmp_path)}
    assert first == second and set(first) == {"recall_at_k_sped.png", "recall_at_k_sped.pdf"}
