"""Measured against published: pure arithmetic on a run record, no I/O.

A published recall is printed with some decimals (91.7): it stands for [91.65, 91.75)
(:func:`printed_range`). The verdict at
each k is ``reproduced`` when that range meets the measured 95% interval, ``close`` when it does not
but the measured recall is within ``close`` points of the published one, else ``differs``; an entry's
verdict is its worst k's."""

from __future__ import annotations

VERDICTS = ("reproduced", "close", "differs")  # best first
CLOSE_POINTS = 1.0


def printed_range(value: float) -> tuple[float, float]:
    """The values a recall printed as ``value`` (percent) may have had: half a unit of its last
    printed decimal either side, at least one decimal, as VPR tables print them (YAML keeps no
    trailing zero: 94.0 reads as 94): 91.7 -> 91.65 .. 91.75; 85.21 -> 85.205 .. 85.215."""
    text = repr(float(value)).rstrip("0").rstrip(".")
    decimals = max(1, len(text.split(".")[1]) if "." in text else 0)
    half = 0.5 * 10.0**-decimals
    return value - half, value + half


def compare(published: dict[int, float], record: dict, close: float = CLOSE_POINTS):
    """(rows, verdict): per k, published and measured recall in percent, the difference, the measured
    95% interval and that k's verdict; the entry's verdict, the worst of its rows."""
    results = record["results"]
    rows = []
    for k in sorted(published):
        measured = 100 * results["recall"][str(k)]
        low, high = (100 * v for v in results["ci95"][str(k)])
        lo, hi = printed_range(published[k])
        if lo <= high and hi >= low:
            verdict = "reproduced"
        elif abs(measured - published[k]) <= close:
            verdict = "close"
        else:
            verdict = "differs"
        rows.append({"k": k, "published": published[k], "measured": measured,
                     "difference": measured - published[k], "interval": [low, high],
                     "verdict": verdict})  # fmt: skip
    worst = max((VERDICTS.index(r["verdict"]) for r in rows), default=0)
    return rows, VERDICTS[worst]


def row_text(published: float, measured: float, low: float, high: float) -> tuple[str, str, str]:
    """A row as the tables print it: (published as printed, 100.0 not 100; measured with its 95%
    interval; the signed difference), for the terminal table and ``report --reproduce``."""
    return (str(float(published)), f"{measured:.2f} [{low:.2f}, {high:.2f}]",
            f"{measured - published:+.2f}")  # fmt: skip
