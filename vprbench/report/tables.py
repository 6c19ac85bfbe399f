"""Tables of the report frame: the recall table, the comparison against a baseline row, and its
LaTeX (pandas' Styler: booktabs rules, the best value of each column in bold, names escaped, so that a
paper can ``\\input`` it), Markdown and CSV renderings with their captions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from vprbench.errors import VPRBenchError
from vprbench.report.records import KS, shown_value


def table_ks(df: pd.DataFrame) -> list[int]:
    """The k of the table's columns: ``df.attrs['ks']`` (report --k) or KS, where any row has one."""
    ks = df.attrs.get("ks") or KS
    return [k for k in ks if f"R@{k}" in df and df[f"R@{k}"].notna().any()]


def recall_table(df: pd.DataFrame) -> pd.DataFrame:
    """Variants (rows, in first-seen order) x (protocol, R@k) columns: the mean over seeds. Attached
    as attrs: ``std`` (sample sd, ddof 1, where a cell has several seeds), ``n`` (seeds per cell),
    ``ci`` (interval bounds, shown for one-seed cells) and ``p`` (the p-value each cell's mark uses)."""
    order = list(dict.fromkeys(df["variant"]))
    protocols = list(dict.fromkeys(df["protocol"]))
    metrics = [f"R@{k}" for k in table_ks(df)]
    grouped = df.groupby(["variant", "protocol"], sort=False)
    columns = pd.MultiIndex.from_tuples(
        [(p, m) for p in protocols for m in metrics], names=["protocol", "metric"]
    )

    def wide(part: pd.DataFrame) -> pd.DataFrame:
        part = part.rename(columns=lambda c: c.split(" ", 1)[0]).unstack("protocol")
        return part.swaplevel(axis=1).reindex(columns=columns).reindex(order)

    mean = wide(grouped[metrics].mean())
    n = wide(grouped[metrics].count())
    std = wide(grouped[metrics].std(ddof=1))
    mean.attrs["n"] = n
    mean.attrs["std"] = std.where(n > 1) if (n > 1).any().any() else None
    bounds = {}
    for side in (
        ("low", "high")
        if all(f"{m} {side}" in df for m in metrics for side in ("low", "high"))
        else ()
    ):
        bounds[side] = wide(grouped[[f"{m} {side}" for m in metrics]].mean()).where(n == 1)
    mean.attrs["ci"] = bounds or None
    column = df.attrs.get("p_column", "p")
    p_cols = [f"{m} {column}" for m in metrics]
    if all(c in df for c in p_cols):
        mean.attrs["p"] = wide(grouped[p_cols].first())
        flags = wide(grouped[[f"{m} untested" for m in metrics]].any())
        mean.attrs["untested"] = flags.fillna(False).astype(bool)
        mean.attrs["baseline"] = df.attrs.get("baseline")
    else:
        mean.attrs["p"] = None
    mean.attrs["seeds"] = (
        df.groupby("variant", sort=False)["seed"].nunique().reindex(order).to_dict()
    )
    mean.index.name = "variant"
    return mean


_TEX_SPECIALS = {c: "\\" + c for c in "&%$#_{}"} | {
    "~": "\\textasciitilde{}", "^": "\\textasciicircum{}", "\\": "\\textbackslash{}",
}  # fmt: skip


def tex_escape(text: str) -> str:
    """``text`` as LaTeX prints it literally (names in captions: ``pitts30k_test`` -> ``pitts30k\\_test``)."""
    return "".join(_TEX_SPECIALS.get(c, c) for c in text)


# Settings a table states once in its caption when every row shares them, or per row in brackets
# when rows differ: (frame column, caption name, how a row shows its value).
_ROW_SETTINGS = (
    ("image_size", "Input", lambda v: v),
    ("pca", "PCA", lambda v: "no PCA" if v == "none" else f"PCA {v}"),
    ("search", "search", lambda v: f"{v} search"),
    ("dtype", "dtype", lambda v: v),
    (
        "batch_size",
        "inference batch of batch-dependent models",
        lambda v: "" if v == "none" else f"batch {v}",
    ),
    ("policy", "queries without positives", lambda v: f"no-positive {v}"),
    ("per_city", "per-city retrieval", lambda v: "per city" if v == "True" else "merged cities"),
    ("rerank", "re-ranking", lambda v: "global only" if v == "none" else f"re-ranked {v}"),
)


def _varying(df: pd.DataFrame) -> list[str]:
    """The row settings whose value differs between the table's rows."""
    return [c for c, _, _ in _ROW_SETTINGS if c in df and df[c].map(shown_value).nunique() > 1]


def caption(df: pd.DataFrame, ci: bool = False, latex: bool = True) -> str:
    """Protocols, the settings every number depends on (one value, or 'each row's in brackets'),
    what a cell is (n seeds, sample sd), the intervals' method and the marks' test (LaTeX: escaped)."""
    esc = tex_escape if latex else str

    def values(column):
        found = sorted({shown_value(v) for v in df[column].dropna()})
        return esc(", ".join(found)) if found else "none"

    varying = _varying(df)

    def stated(column: str) -> str:
        return "each row's in brackets" if column in varying else values(column)

    parts = []
    for column, name, _ in _ROW_SETTINGS:
        if column not in df or column in ("dtype", "per_city") and column not in varying:
            continue  # fp32 and merged cities unless some row differs
        separator = ": " if column in ("dtype", "policy", "per_city") else " "
        parts.append(f"{name}{separator}{stated(column)}")
    text = f"Recall@k (\\%) on {values('protocol')}. " + "; ".join(parts) + "."
    table = recall_table(df)
    n = table.attrs["n"]
    counts = sorted({int(v) for v in n.to_numpy().ravel() if v > 0})
    if counts and counts[-1] > 1:
        seeds = (
            f"n = {counts[-1]}" if len(counts) == 1 else f"n = {counts[0]} to {counts[-1]} per cell"
        )
        text += (f" Mean over training seeds ({seeds}) $\\pm$ their sample standard deviation "
                 "(ddof 1).")  # fmt: skip
        if counts[0] == 1:
            text += " A cell without $\\pm$ has one seed."
    if ci and table.attrs.get("ci") is not None and (n == 1).any().any():
        if "interval_method" not in df:  # a frame from elsewhere: the records' own words unknown
            df = df.assign(interval_method="95% interval of each record")
        methods = df.groupby("protocol", sort=False)["interval_method"].agg(
            lambda v: "; ".join(dict.fromkeys(v))
        )
        shown = "; ".join(f"{esc(p)}: {esc(m)}" for p, m in methods.items())
        text += (f" In brackets: the 95\\% interval over queries ({shown})"
                 + (", for one-seed cells." if counts and counts[-1] > 1 else "."))  # fmt: skip
    if df.attrs.get("baseline") is not None:
        tests = df.attrs.get("tests") or {}
        how = []
        if tests.get("queries"):
            how.append("one run each: " + esc("; ".join(sorted(tests["queries"])))
                       + " on the same queries (query sampling only)")  # fmt: skip
        if tests.get("seeds"):
            how.append("several seeds each: Welch's t-test across seeds")
        corrected = (f"Holm-Bonferroni over the {tests.get('family', 0)} cells tested"
                     if df.attrs.get("p_column") == "p_holm" else "uncorrected")  # fmt: skip
        text += (f" $^\\dagger$: not significantly different from {esc(df.attrs['baseline'])} "
                 f"($p \\geq 0.05$, {corrected}; {'; '.join(how) or 'no cell tested'}).")  # fmt: skip
        if tests.get("untested"):
            text += (f" $^\\ddagger$: not tested ({tests['untested']} cell(s): one seed on one side "
                     "and several on the other, or no seed-to-seed variation on either).")  # fmt: skip
    if df["random_init"].any():
        text += (" Rows marked * start from random weights, in whole or in part: not trained, "
                 "trained from a random initialisation or distilled from a random teacher, or "
                 "with backbone-only weights (the DRM and aggregator random).")  # fmt: skip
    if not latex:  # plain text (Markdown, the terminal)
        for tex, plain in (("\\%", "%"), ("$\\pm$", "±"), ("$^\\dagger$", "†"),
                           ("$^\\ddagger$", "‡"), ("$p \\geq 0.05$", "p ≥ 0.05")):  # fmt: skip
            text = text.replace(tex, plain)
    return text


def _cells(table: pd.DataFrame, latex: bool, ci: bool = False) -> pd.DataFrame:
    std = table.attrs.get("std")
    pm = " $\\pm$ " if latex else " ± "
    out = table.map(lambda v: "" if pd.isna(v) else f"{v:.1f}")
    bounds = table.attrs.get("ci")
    if ci and bounds is not None:
        for col in out.columns:
            for i in out.index:
                low, high = bounds["low"].loc[i, col], bounds["high"].loc[i, col]
                if out.loc[i, col] and not pd.isna(low):
                    out.loc[i, col] = f"{out.loc[i, col]} [{low:.1f}, {high:.1f}]"
    if std is not None:
        out = out.combine(
            std, lambda a, b: a.combine(b, lambda x, s: x if pd.isna(s) else f"{x}{pm}{s:.1f}")
        )
    p_values = table.attrs.get("p")
    if p_values is not None:
        dagger = "$^\\dagger$" if latex else "†"
        untested_mark = "$^\\ddagger$" if latex else "‡"
        untested = table.attrs.get("untested")
        for col in out.columns:
            for i in out.index:
                p = p_values.loc[i, col]
                if out.loc[i, col] and not pd.isna(p) and p >= 0.05:
                    out.loc[i, col] += dagger
                elif out.loc[i, col] and untested is not None and untested.loc[i, col]:
                    out.loc[i, col] += untested_mark
    return out


def against_baseline(df: pd.DataFrame, baseline: str, correction: str = "holm") -> pd.DataFrame:
    """``df`` with columns ``R@k p`` (and ``R@k p_holm``): each cell tested against the ``baseline``
    variant's on the same protocol. One run on each side: the paired test on the same queries under
    the runs' cluster rule (vprbench/compare.py; different queries or ground truth are refused).
    Several seeds on each side: Welch's t-test across seeds. Otherwise the cell is not tested (NaN).
    ``correction`` "holm": Holm-Bonferroni over every cell tested; the marks use ``p_holm``."""
    from scipy.stats import ttest_ind

    from vprbench.evaluate.compare import compare_with_resampling
    from vprbench.evaluate.metrics import holm

    if correction not in ("holm", "none"):
        raise VPRBenchError(f"--correction must be holm or none, got {correction!r}")
    if baseline not in set(df["variant"]):
        raise VPRBenchError(
            f"--baseline {baseline!r} is not a row of this report; the rows are "
            + ", ".join(dict.fromkeys(df["variant"]))
        )
    out = df.copy()
    ks = table_ks(df)
    for k in ks:
        out[f"R@{k} p"] = np.nan
        out[f"R@{k} untested"] = False
    tests: dict = {"queries": set(), "seeds": False, "untested": 0}
    cells = []  # (row indices, k, p) of every tested cell
    for protocol, rows in df.groupby("protocol", sort=False):
        base = rows[rows["variant"] == baseline]
        if base.empty:
            raise VPRBenchError(f"--baseline {baseline!r} has no run on {protocol}")
        for variant, runs in rows[rows["variant"] != baseline].groupby("variant", sort=False):
            if len(runs) == 1 and len(base) == 1:
                record = json.loads(Path(runs["record"].iloc[0]).read_text())
                base_record = json.loads(Path(base["record"].iloc[0]).read_text())
                try:
                    found, resampling = compare_with_resampling(record, base_record, ks)
                except VPRBenchError as exc:
                    raise VPRBenchError(f"{variant} vs {baseline} on {protocol}: {exc}") from None
                tests["queries"].add(f"{resampling.method()['test']} ({resampling.describe()})")
                cells += [(runs.index, c.k, c.p_value) for c in found]
            elif len(runs) > 1 and len(base) > 1:
                for k in ks:
                    a, b = runs[f"R@{k}"].dropna(), base[f"R@{k}"].dropna()
                    # no seed-to-seed variation on either side: Welch's statistic is undefined
                    # (scipy gives p = 0 for different constants), so there is nothing to test
                    varies = len(a) > 1 < len(b) and (a.std() > 0 or b.std() > 0)
                    p = float(ttest_ind(a, b, equal_var=False).pvalue) if varies else np.nan
                    if np.isnan(p):
                        out.loc[runs.index, f"R@{k} untested"] = True
                        tests["untested"] += 1
                        continue
                    tests["seeds"] = True
                    cells.append((runs.index, k, p))
            else:
                tests["untested"] += len(ks)
                for k in ks:
                    out.loc[runs.index, f"R@{k} untested"] = True
    adjusted = holm([p for _, _, p in cells]) if correction == "holm" else [p for _, _, p in cells]
    if correction == "holm":
        for k in ks:
            out[f"R@{k} p_holm"] = np.nan
    for (index, k, p), q in zip(cells, adjusted, strict=True):
        out.loc[index, f"R@{k} p"] = p
        if correction == "holm":
            out.loc[index, f"R@{k} p_holm"] = q
    tests["family"] = len(cells)
    out.attrs.update(df.attrs)
    out.attrs.update(baseline=baseline, tests=tests,
                     p_column="p_holm" if correction == "holm" else "p")  # fmt: skip
    return out


def to_latex(df: pd.DataFrame, label: str = "tab:ablation", ci: bool = False) -> str:
    """The recall table as LaTeX through pandas' Styler: booktabs rules with a \\cmidrule under each
    protocol, numbers right-aligned, the best printed value of each column in bold (ties all bold),
    names escaped; random-init rows marked *."""
    table = recall_table(df)
    # bold on the printed (rounded) values, so that equal printed values are bold alike
    printed = table.map(lambda v: v if pd.isna(v) else float(f"{v:.1f}"))  # as _cells prints
    best = printed.max()
    random_rows = set(df.loc[df["random_init"], "variant"])

    def bold(column: pd.Series) -> list[str]:
        values = printed[column.name]
        return ["font-weight: bold;" if v == best[column.name] else "" for v in values]

    cells = _cells(table, latex=True, ci=ci)
    cells.index = _row_names(df, cells.index, random_rows)
    cells.index.name = None
    cells.columns.names = [None, None]
    styler = cells.style.apply(bold, axis=0)
    styler = styler.format_index(escape="latex", axis=0).format_index(escape="latex", axis=1)
    text = styler.to_latex(hrules=True, caption=caption(df, ci), label=label, convert_css=True,
                           multicol_align="c", position_float="centering",
                           column_format="l" + "r" * len(cells.columns))  # fmt: skip
    text = _cmidrules(text, [len(list(g)) for _, g in _groupby_first(cells.columns)])
    return LATEX_PREAMBLE + _caption_below(text)


# What the table needs from the document it is \input into, said where a reader of the file looks
LATEX_PREAMBLE = (
    "% Written by vprbench report. Needs in the preamble: \\usepackage{booktabs} (\\toprule,\n"
    "% \\midrule, \\cmidrule, \\bottomrule). Bold best values use \\bfseries; no other package.\n"
)


def _caption_below(text: str) -> str:
    """The caption and label after the tabular: LaTeX's \\abovecaptionskip separates a caption
    from what is above it and nothing separates it from what follows, so a caption above a booktabs
    table touches its top rule in a plain article (pandas writes it above)."""
    lines = text.splitlines()
    moved = [line for line in lines if line.startswith(("\\caption{", "\\label{"))]
    rest = [line for line in lines if line not in moved]
    end = rest.index("\\end{tabular}") + 1
    out = rest[:end] + moved + rest[end:]
    return "\n".join(out) + ("\n" if text.endswith("\n") else "")


def _groupby_first(columns: pd.MultiIndex):
    from itertools import groupby

    return groupby(columns, key=lambda c: c[0])


def _cmidrules(text: str, spans: list[int]) -> str:
    """A booktabs \\cmidrule under each protocol's \\multicolumn header (pandas writes none)."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if "\\multicolumn" in line:
            rules, start = [], 2
            for span in spans:
                rules.append(f"\\cmidrule(lr){{{start}-{start + span - 1}}}")
                start += span
            lines.insert(i + 1, " ".join(rules))
            break
    return "\n".join(lines) + ("\n" if text.endswith("\n") else "")


def _row_names(df: pd.DataFrame, index, random_rows: set) -> list[str]:
    """Row names as printed: * for random initialisation, and in brackets each setting in which the
    rows differ (input size, PCA, search, dtype, batch, policy): a table never mixes them unmarked."""
    varying = [(c, show) for c, _, show in _ROW_SETTINGS if c in _varying(df)]
    names = []
    for v in index:
        rows = df[df["variant"] == v]
        shown = [
            "/".join(dict.fromkeys(show(shown_value(x)) for x in rows[c])) for c, show in varying
        ]
        shown = [x for x in shown if x]
        names.append(
            f"{v}{'*' if v in random_rows else ''}" + (f" [{', '.join(shown)}]" if shown else "")
        )
    return names


def to_markdown(df: pd.DataFrame, ci: bool = False) -> str:
    """The recall table as Markdown, the same numbers as the LaTeX one."""
    random_rows = set(df.loc[df["random_init"], "variant"])
    table = _cells(recall_table(df), latex=False, ci=ci)
    table.index = _row_names(df, table.index, random_rows)
    table.columns = [f"{p} {m}" for p, m in table.columns]
    text = caption(df, ci, latex=False)
    # numparse off: tabulate would print the cell "28.0" as 28; numbers still right-aligned
    align = ("left",) + ("right",) * len(table.columns)
    return table.to_markdown(disable_numparse=True, colalign=align) + "\n\n" + text + "\n"


def to_csv(df: pd.DataFrame) -> str:
    """The long frame: one row per run record, every number and setting."""
    return df.drop(columns=["record", "order"]).to_csv(index=False)
