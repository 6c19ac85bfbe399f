"""Figures of the report frame (matplotlib, PNG and PDF without a creation date): recall@k curves,
the efficiency plane with its Pareto fronts, training curves per stage, and query mosaics."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd

from vprbench.errors import VPRBenchError


def _save(fig, out: Path, name: str) -> list[Path]:
    paths = [out / f"{name}.png", out / f"{name}.pdf"]
    for path in paths:
        # no creation date in the PDF: the same figure gives the same bytes (a report re-run
        # changes no file it did not change)
        metadata = {"CreationDate": None} if path.suffix == ".pdf" else None
        fig.savefig(path, dpi=150, bbox_inches="tight", metadata=metadata)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return paths


def _label(ax, xlabel: str, ylabel: str, title: str | None = None, legend: int = 7) -> None:
    """Axis labels, title, a light grid and a small legend: the look of every figure here."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=legend)


_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "*", "h", "p")


def series_styles(n: int) -> list[dict]:
    """Matplotlib styles of ``n`` series, none sharing a colour and marker: tab10 up to 10 series,
    tab20 up to 20, beyond that colours repeat with another marker and line style."""
    import matplotlib

    cmap = matplotlib.colormaps["tab10" if n <= 10 else "tab20"]
    size = 10 if n <= 10 else 20
    lines = ("-", "--", ":", "-.")
    return [{"color": cmap(i % size), "marker": _MARKERS[i % len(_MARKERS)],
             "linestyle": lines[(i // size) % len(lines)]} for i in range(n)]  # fmt: skip


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _row_summary(df: pd.DataFrame, ks: list[int]) -> pd.DataFrame:
    """Per (protocol, row label), in table order: mean R@k, and the error bar of each: the sd over
    seeds where a row has several, else its interval over queries (NaN where it has none)."""
    out = []
    for (protocol, variant), rows in df.groupby(["protocol", "variant"], sort=False):
        item = {"protocol": protocol, "variant": variant, "n": len(rows)}
        for k in ks:
            values = rows[f"R@{k}"].dropna()
            mean = values.mean() if len(values) else np.nan
            if len(values) > 1:
                low = high = values.std(ddof=1)
            else:
                low = mean - rows[f"R@{k} low"].mean() if f"R@{k} low" in rows else np.nan
                high = rows[f"R@{k} high"].mean() - mean if f"R@{k} high" in rows else np.nan
            item |= {f"R@{k}": mean, f"R@{k} below": low, f"R@{k} above": high}
        out.append(item)
    return pd.DataFrame(out)


def _bar_note(summary: pd.DataFrame) -> str:
    several = (summary["n"] > 1).any()
    single = (summary["n"] == 1).any()
    parts = (["bars: 95% interval over queries"] if single else []) + (
        ["bars: ±1 sd over seeds"] if several else []
    )
    return "; ".join(parts)


def recall_curves(df: pd.DataFrame, out: Path) -> list[Path]:
    """Recall@k against k, one figure per protocol, one line per table row (its mean over seeds), in
    the table's order, with its interval (one seed) or sd (several) as error bars, ticks at each k."""
    plt = _pyplot()
    ks = sorted(int(c[2:]) for c in df.columns if re.fullmatch(r"R@\d+", c) and df[c].notna().any())
    summary = _row_summary(df, ks)
    paths = []
    for protocol, part in summary.groupby("protocol", sort=False):
        fig, ax = plt.subplots(figsize=(5.5, 3.8))
        styles = series_styles(len(part))
        for i, ((_, row), style) in enumerate(zip(part.iterrows(), styles, strict=True)):
            present = [k for k in ks if not pd.isna(row[f"R@{k}"])]
            # each series a little to the side (log x), so that error bars do not cover each other
            dodge = 1 + 0.012 * (i - (len(part) - 1) / 2)
            yerr = np.array([[row[f"R@{k} below"] for k in present],
                             [row[f"R@{k} above"] for k in present]])  # fmt: skip
            ax.errorbar([k * dodge for k in present], [row[f"R@{k}"] for k in present],
                        yerr=None if np.isnan(yerr).all() else np.nan_to_num(yerr),
                        capsize=2, ms=4, lw=1.2, label=row["variant"], **style)  # fmt: skip
        ax.set_xscale("log")
        ax.set_xticks(ks)
        ax.set_xticklabels([str(k) for k in ks])
        ax.minorticks_off()
        note = _bar_note(part)
        _label(ax, "k", "Recall@k (%)", f"{protocol}" + (f" ({note})" if note else ""), legend=6)
        ax.legend(fontsize=6, loc="center left", bbox_to_anchor=(1.01, 0.5))
        paths += _save(fig, out, f"recall_at_k_{protocol}")
    return paths


def pareto_front(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Indices of the points no other point beats (less x and at least as much y), by increasing x."""
    order = np.lexsort((-y, x))
    front, best = [], -np.inf
    for i in order:
        if y[i] > best:
            front.append(i)
            best = y[i]
    return np.array(front, dtype=int)


def fronts_by_size(points: pd.DataFrame, column: str) -> dict[str, np.ndarray]:
    """{input size: row positions of ``points`` on its Pareto front of R@1 against ``column``}: one
    front per input size, never across sizes (a cheaper point at a smaller input is another setting,
    not the same method winning)."""
    x, y = points[column].to_numpy(), points["R@1"].to_numpy()
    size_of = points["image_size"].to_numpy()
    out = {}
    for size in dict.fromkeys(size_of):
        same = np.flatnonzero(size_of == size)
        out[size] = same[pareto_front(x[same], y[same])]
    return out


def efficiency(df: pd.DataFrame, out: Path) -> list[Path]:
    """R@1 against GFLOPs and against parameters, per protocol: one marker per table row (legend in
    table order, no text on the plot to overlap), R@1's error bar, the Pareto front of each size."""
    plt = _pyplot()
    paths = []
    summary = _row_summary(df, [1])
    costs = df.groupby(["protocol", "variant"], sort=False)[["gflops", "params_m"]].mean()
    sizes_of = df.groupby(["protocol", "variant"], sort=False)["image_size"].agg(
        lambda v: "/".join(dict.fromkeys(v))
    )
    summary = summary.join(costs, on=["protocol", "variant"]).join(
        sizes_of, on=["protocol", "variant"]
    )
    for protocol, part in summary.groupby("protocol", sort=False):
        for column, label in (("gflops", "GFLOPs per image"), ("params_m", "parameters (M)")):
            pts = part.dropna(subset=[column, "R@1"]).reset_index(drop=True)
            if pts.empty:
                continue
            fig, ax = plt.subplots(figsize=(5.5, 3.8))
            sizes = list(dict.fromkeys(pts["image_size"]))
            for (_, row), style in zip(pts.iterrows(), series_styles(len(pts)), strict=True):
                name = (
                    f"{row['variant']} [{row['image_size']}]" if len(sizes) > 1 else row["variant"]
                )
                below, above = row["R@1 below"], row["R@1 above"]
                yerr = None if pd.isna(below) else [[below], [above]]
                ax.errorbar([row[column]], [row["R@1"]], yerr=yerr, capsize=2, ms=5,
                            color=style["color"], marker=style["marker"], linestyle="none",
                            label=name)  # fmt: skip
            x, y = pts[column].to_numpy(), pts["R@1"].to_numpy()
            for n, (size, front) in enumerate(fronts_by_size(pts, column).items()):
                name = "Pareto front" + (f" ({size})" if len(sizes) > 1 else "")
                ax.plot(x[front], y[front], "-" if n == 0 else "--", color="0.55", lw=1.5,
                        zorder=0, label=name)  # fmt: skip
            title = (
                protocol if len(sizes) == 1 else f"{protocol} (inputs differ: {', '.join(sizes)})"
            )
            note = _bar_note(pts)
            _label(ax, label, "R@1 (%)", title + (f"\n{note}" if note else ""), legend=6)
            ax.legend(fontsize=6, loc="center left", bbox_to_anchor=(1.01, 0.5))
            paths += _save(fig, out, f"r1_vs_{column}_{protocol}")
    return paths


def pr_curves(records: list[dict], out: Path) -> list[Path]:
    """Precision-recall curves of the runs evaluated with ``--metrics auc-pr`` (or r@100p), one
    figure per protocol, one panel per convention (VPR-Bench's from the predictions file, VPR_Tutorial's
    single and multi matching from the record), one line per run, AUC-PR in the legend."""
    plt = _pyplot()
    by_protocol: dict[str, list[dict]] = {}
    for r in sorted(records, key=lambda r: (r.get("ablation") or {}).get("variant_index", 0)):
        if "vpr-bench" in (r["results"].get("metrics") or {}):
            by_protocol.setdefault(r["protocol"]["name"], []).append(r)
    panels = (("vpr-bench", "VPR-Bench (sklearn curve, best match)"),
              ("vpr-tutorial-single", "VPR_Tutorial, single match"),
              ("vpr-tutorial-multi", "VPR_Tutorial, multi match"))  # fmt: skip
    paths = []
    for protocol, runs in by_protocol.items():
        fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
        for ax, (convention, title) in zip(axes[0], panels, strict=True):
            for r, style in zip(runs, series_styles(len(runs)), strict=True):
                m = r["results"]["metrics"][convention]
                if convention == "vpr-bench":
                    with np.load(r["files"]["predictions"]) as z:
                        precision, recall = z["pr_vpr_bench_precision"], z["pr_vpr_bench_recall"]
                else:
                    precision, recall = m["curve"]["precision"], m["curve"]["recall"]
                label = (r.get("ablation") or {}).get("variant") or r["model"]["name"]
                ax.plot(recall, precision, color=style["color"], linestyle=style["linestyle"],
                        lw=1.2, label=f"{label} (AUC {m['auc_pr']:.3f})")  # fmt: skip
            ax.set_xlim(0, 1.02)
            ax.set_ylim(0, 1.02)
            _label(ax, "recall", "precision", title, legend=6)
        fig.suptitle(f"{protocol}: precision-recall (cosine similarity)", fontsize=9)
        fig.tight_layout()
        paths += _save(fig, out, f"pr_curves_{protocol}")
    return paths


def training_curves(records: list[dict], out: Path) -> list[Path]:
    """Loss against step of every training run the records name (metrics.jsonl): one panel per stage
    (a distillation MSE and a MultiSimilarity loss differ in scale), one line per run, a run shared
    by several variants labelled with all of them."""
    from matplotlib.ticker import MaxNLocator

    plt = _pyplot()
    runs: dict[str, list[str]] = {}  # training folder -> the variants that use it
    for r in sorted(records, key=lambda r: (r.get("ablation") or {}).get("variant_index", 0)):
        tags = r.get("ablation") or {}
        for folder in tags.get("train", []):
            names = runs.setdefault(folder, [])
            if tags.get("variant") not in names:
                names.append(tags.get("variant"))
    stages: dict[str, list[tuple[str, list[str]]]] = {}
    for folder, names in runs.items():
        if (Path(folder) / "metrics.jsonl").is_file():
            stages.setdefault(Path(folder).name.split("-")[0], []).append((folder, names))
    if not stages:
        return []
    fig, axes = plt.subplots(1, len(stages), figsize=(5.2 * len(stages), 3.6), squeeze=False)
    for ax, (stage, items) in zip(axes[0], stages.items(), strict=True):
        for (folder, names), style in zip(items, series_styles(len(items)), strict=True):
            rows = [
                json.loads(x) for x in (Path(folder) / "metrics.jsonl").read_text().splitlines()
            ]
            rows = [x for x in rows if "loss" in x]
            ax.plot([x["step"] for x in rows], [x["loss"] for x in rows], color=style["color"],
                    linestyle=style["linestyle"], marker=style["marker"], ms=3,
                    label=", ".join(str(n) for n in names))  # fmt: skip
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        _label(ax, "step", "training loss", f"stage: {stage}", legend=6)
        ax.legend(fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=2)
    fig.tight_layout()
    return _save(fig, out, "training_curves")


def mosaic(record: dict, queries: list[int], out: Path, k: int = 5) -> list[Path]:
    """For each chosen query of a run: the query image and its top-k retrievals, correct ones framed
    green, wrong ones red."""
    from PIL import Image

    from vprbench.datasets.formatted import load_formatted

    plt = _pyplot()
    from vprbench.paths import data_root

    ds = load_formatted(record["protocol"]["name"], data_root())
    indices = np.load(record["files"]["predictions"])["indices"]
    bad = [q for q in queries if not 0 <= q < len(ds.queries)]
    if bad:
        raise VPRBenchError(f"--queries {bad}: outside 0..{len(ds.queries) - 1}")
    fig, axes = plt.subplots(
        len(queries), k + 1, figsize=(1.6 * (k + 1), 1.4 * len(queries)), squeeze=False
    )
    for row, q in zip(axes, queries, strict=True):
        images = [(ds.queries[q], f"query {q}", "black")]
        for rank, i in enumerate(indices[q][:k], 1):
            if i < 0:
                continue
            ok = int(i) in set(ds.positives[q].tolist())
            verdict = "correct" if ok else "wrong"
            images.append((ds.database[i], f"{rank}: db {i} ({verdict})", "green" if ok else "red"))
        for ax, (rel, title, color) in zip(row, images, strict=False):
            with Image.open(ds.image_path(rel)) as im:
                ax.imshow(im.convert("RGB"))
            ax.set_title(title, fontsize=6)
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_edgecolor(color)
                spine.set_linewidth(2.5)
        for ax in row[len(images) :]:
            ax.axis("off")
    name = (record.get("ablation") or {}).get("variant") or record["model"]["name"]
    fig.suptitle(f"{name} on {record['protocol']['name']}: each query's top {k} "
                 "(green: a positive, red: not)", fontsize=7)  # fmt: skip
    slug = "".join(c if c.isalnum() else "_" for c in f"{name}_{record['protocol']['name']}")
    return _save(fig, out, f"mosaic_{slug}")
