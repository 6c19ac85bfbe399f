"""`report --reproduce`: the reproduce records (results/reproduce/*.json, `vprbench reproduce`) as one
table of published against measured recall, in LaTeX, Markdown and CSV. Each entry's latest record."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from vprbench.errors import VPRBenchError
from vprbench.report.tables import LATEX_PREAMBLE, _caption_below
from vprbench.reproduce.verdict import row_text

CAPTION = (
    "Published against measured recall@k (\\%). Measured: the recall and its 95\\% interval over "
    "the protocol's queries; reproduced: the published value (to its printed decimals) is inside "
    "the interval; close: within {points} of it; differs: neither."
)


def caption(df: pd.DataFrame) -> str:
    """The caption, with the --close points the records were judged with."""
    values = sorted(set(df["close_points"]))
    points = " or ".join(f"{p:g}" for p in values) + (" point" if values == [1] else " points")
    return CAPTION.format(points=points)


def reproduce_frame(results_dir: Path) -> pd.DataFrame:
    """One row per entry and k of the latest record of each entry."""
    latest: dict[str, dict] = {}
    for path in sorted((Path(results_dir) / "reproduce").glob("*.json")):
        try:
            record = json.loads(path.read_text())
            entry_id = record["entry"]["id"]
        except (OSError, ValueError, KeyError) as exc:
            raise VPRBenchError(f"{path}: not a reproduce record ({exc})") from exc
        # ISO UTC timestamps with microseconds sort by time; a later file wins a tie
        if entry_id not in latest or record["created"] >= latest[entry_id]["created"]:
            latest[entry_id] = record
    if not latest:
        raise VPRBenchError(f"report --reproduce: no record under {Path(results_dir) / 'reproduce'}; "
                            "run vprbench reproduce first")  # fmt: skip
    rows = []
    for record in latest.values():
        e = record["entry"]
        for row in record["rows"]:
            rows.append({"entry": e["id"], "model": e["model"], "weights": e["weights"] or "",
                         "protocol": e["protocol"], "stage": e["settings"].get("stage", "global"),
                         "k": row["k"], "published": row["published"],
                         "measured": row["measured"], "low": row["interval"][0],
                         "high": row["interval"][1], "difference": row["difference"],
                         "verdict": row["verdict"], "close_points": record["close_points"],
                         "source": e["where"],
                         "third_party": e["third_party"] or ""})  # fmt: skip
    return pd.DataFrame(rows)


def _cells(df: pd.DataFrame) -> pd.DataFrame:
    texts = [row_text(p, m, lo, hi) for p, m, lo, hi
             in zip(df["published"], df["measured"], df["low"], df["high"], strict=True)]  # fmt: skip
    out = pd.DataFrame({
        "entry": df["entry"], "protocol": df["protocol"], "k": df["k"].map(str),
        # as printed (100.0, not 100); a third party's number says so beside it
        "published": [t[0] + (" (third party)" if third else "")
                      for t, third in zip(texts, df["third_party"], strict=True)],
        "measured [95%]": [t[1] for t in texts], "diff": [t[2] for t in texts],
        "verdict": df["verdict"],
        "source": df["source"] + df["third_party"].map(lambda t: f" (third party: {t})" if t else ""),
    })  # fmt: skip
    return out.reset_index(drop=True)


def reproduce_markdown(df: pd.DataFrame) -> str:
    cells = _cells(df)
    align = ("left", "left", "right", "right", "left", "right", "left", "left")
    text = cells.to_markdown(index=False, disable_numparse=True, colalign=align)
    return text + "\n\n" + caption(df).replace("\\%", "%") + "\n"


def reproduce_latex(df: pd.DataFrame, label: str = "tab:reproduce") -> str:
    cells = _cells(df).drop(columns=["source"])
    styler = cells.style.hide(axis="index").format_index(escape="latex", axis=1)
    styler = styler.format(escape="latex")
    text = styler.to_latex(hrules=True, caption=caption(df), label=label, position_float="centering",
                           column_format="llrrlrl")  # fmt: skip
    return LATEX_PREAMBLE + _caption_below(text)


def write_reproduce(results_dir: Path, out: Path, formats: list[str]) -> list[Path]:
    """report-reproduce.{tex,md,csv} under ``out``; returns the paths."""
    from vprbench.atomic import write_text

    df = reproduce_frame(results_dir)
    out.mkdir(parents=True, exist_ok=True)
    writers = {"latex": (reproduce_latex, "tex"), "markdown": (reproduce_markdown, "md"),
               "csv": (lambda d: d.to_csv(index=False), "csv")}  # fmt: skip
    written = []
    for fmt in formats:
        write, suffix = writers[fmt]
        path = out / f"report-reproduce.{suffix}"
        write_text(path, write(df))
        written.append(path)
    return written
