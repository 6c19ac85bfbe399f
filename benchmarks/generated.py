"""Generated VPR-Bench folders for the benchmarks: ``n`` database images and ``n`` queries, query i
matching database image i."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def vpr_bench_folder(src: Path, n: int, kind: str = "jpeg", side: int = 64, seed: int = 0) -> Path:
    """``kind="jpeg"``: 640x480 JPEGs (quality 90 database, 85 queries) of smooth random images
    (upsampled noise compresses like a photograph, not like white noise), the size of Pitts30k and
    MSLS images. ``kind="png"``: ``side`` x ``side`` PNGs of noise, cheap to decode."""
    rng = np.random.default_rng(seed)
    for split in ("ref", "query"):
        (src / split).mkdir(parents=True)
    for i in range(n):
        if kind == "jpeg":
            small = rng.integers(0, 256, size=(30, 40, 3), dtype=np.uint8)
            image = Image.fromarray(small).resize((640, 480), Image.BICUBIC)
            image.save(src / "ref" / f"{i:07d}.jpg", quality=90)
            image.save(src / "query" / f"{i:07d}.jpg", quality=85)
        else:
            for split in ("ref", "query"):
                pixels = rng.integers(0, 256, size=(side, side, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(src / split / f"{i:07d}.png", compress_level=1)
    rows = np.empty((n, 2), dtype=object)
    for q in range(n):
        rows[q, 0], rows[q, 1] = q, [q]
    np.save(src / "ground_truth_new.npy", rows, allow_pickle=True)
    return src
