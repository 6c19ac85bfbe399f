"""Build the embedded nordland-sample (VPR-Bench layout) from ../shared/data/nordland_64x32.

600 consecutive frames; summer = database (ref/), winter = queries (query/), query i matches database
i-1, i, i+1. Images are copied byte for byte. Run from the repository root:

    python scripts/build_nordland_sample.py [SOURCE] [--start 1200] [--count 600]
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np

DEST = Path(__file__).resolve().parents[1] / "vprbench" / "data" / "nordland_sample"


def build(source: Path, start: int, count: int, dest: Path = DEST) -> None:
    names = sorted(p.name for p in (source / "summer").glob("images-*.png"))[start : start + count]
    if len(names) != count:
        raise SystemExit(f"{source}: only {len(names)} frames from index {start}")
    if dest.exists():
        shutil.rmtree(dest)
    for season, folder in (("summer", "ref"), ("winter", "query")):
        (dest / folder).mkdir(parents=True)
        for name in names:
            shutil.copyfile(source / season / name, dest / folder / name)
    rows = np.empty((count, 2), dtype=object)
    for i in range(count):
        rows[i, 0] = i
        rows[i, 1] = [j for j in (i - 1, i, i + 1) if 0 <= j < count]
    np.save(dest / "ground_truth_new.npy", rows, allow_pickle=True)


def source_parser(description: str) -> argparse.ArgumentParser:
    """Command-line parser with the SOURCE argument: ../shared/data/nordland_64x32 by default."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "source",
        nargs="?",
        type=Path,
        default=Path(__file__).resolve().parents[2] / "shared" / "data" / "nordland_64x32",
    )
    return parser


if __name__ == "__main__":
    parser = source_parser(__doc__)
    parser.add_argument("--start", type=int, default=1200)
    parser.add_argument("--count", type=int, default=600)
    args = parser.parse_args()
    build(args.source, args.start, args.count)
    print(f"wrote {DEST}")
