"""The robotics metrics' table of a report (`report --metrics`): AUC-PR and R@100P of the runs
evaluated with ``--metrics``, per protocol and convention, in LaTeX and Markdown."""

from __future__ import annotations

import pandas as pd

from vprbench.errors import VPRBenchError
from vprbench.report.tables import (
    LATEX_PREAMBLE,
    _caption_below,
    _cmidrules,
    _groupby_first,
    _row_names,
)

ROBOTICS_PREFIXES = ("AUC-PR ", "R@100P ")  # the frame's robotics columns (records.frame)


def robotics_table(df: pd.DataFrame) -> pd.DataFrame:
    """Variants x (protocol, metric) of the robotics metrics (evaluate --metrics), the mean over
    seeds; raises when no record has them."""
    metrics = [c for c in df.columns if c.startswith(ROBOTICS_PREFIXES) and df[c].notna().any()]
    if not metrics:
        raise VPRBenchError(
            "report --metrics: no run record has robotics metrics; evaluate with --metrics first"
        )
    order = list(dict.fromkeys(df["variant"]))
    protocols = list(dict.fromkeys(df["protocol"]))
    mean = df.groupby(["variant", "protocol"], sort=False)[metrics].mean().unstack("protocol")
    columns = pd.MultiIndex.from_tuples([(p, m) for p in protocols for m in metrics])
    return mean.swaplevel(axis=1).reindex(columns=columns).reindex(order).dropna(axis=1, how="all")


def _robotics_cells(df: pd.DataFrame) -> pd.DataFrame:
    random_rows = set(df.loc[df["random_init"], "variant"])
    table = robotics_table(df)
    cells = table.map(lambda v: "" if pd.isna(v) else f"{v:.3f}")
    cells.index = _row_names(df, cells.index, random_rows)
    return cells


ROBOTICS_CAPTION = (
    "AUC-PR and recall at 100\\% precision (0-1) from cosine similarities of the global descriptors "
    "(no re-ranking): VPR-Bench's convention (scikit-learn's curve over each query's best match) "
    "and VPR\\_Tutorial's (100 thresholds; single: best matches, multi: the whole similarity matrix)."
)


def robotics_latex(df: pd.DataFrame, label: str = "tab:robotics") -> str:
    """The robotics metrics as a booktabs LaTeX table (names escaped, a rule under each protocol)."""
    cells = _robotics_cells(df)
    cells.index.name = None
    styler = cells.style.format_index(escape="latex", axis=0).format_index(escape="latex", axis=1)
    text = styler.to_latex(hrules=True, caption=ROBOTICS_CAPTION, label=label,
                           multicol_align="c", position_float="centering",
                           column_format="l" + "r" * len(cells.columns))  # fmt: skip
    text = _cmidrules(text, [len(list(g)) for _, g in _groupby_first(cells.columns)])
    return LATEX_PREAMBLE + _caption_below(text)


def robotics_markdown(df: pd.DataFrame) -> str:
    cells = _robotics_cells(df)
    cells.columns = [f"{p} {m}" for p, m in cells.columns]
    align = ("left",) + ("right",) * len(cells.columns)
    caption_text = ROBOTICS_CAPTION.replace("\\%", "%").replace("\\_", "_")
    return cells.to_markdown(disable_numparse=True, colalign=align) + "\n\n" + caption_text + "\n"
