"""Peak memory of `vprbench extract` against the number of images, measured in one run: the same
command on generated datasets of 1,000 and 10,000 database images (and as many queries).

    .venv/bin/python benchmarks/extract_memory.py [--sizes 1000,10000] [--model pixels] [--dim 64]

Each extraction runs `vprbench extract` in its own process (peak RSS is per process; loader workers
are separate processes and not counted), on ``--dim`` x ``--dim`` PNGs. Printed: the peak resident
memory of each, what the descriptors alone would take in memory, and the ratio of the peaks (the
target: at most 1.2 for 10x the images).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

CHILD = """
import resource, sys
from vprbench.cli import main
sys.argv = ["vprbench", "extract", "--model", {model!r}, "--dataset", "mem", "--workers", "0"]
try:
    main()
except SystemExit as exc:
    assert not exc.code, exc.code
print("PEAK_KIB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def make_dataset(root: Path, n: int, side: int) -> Path:
    rng = np.random.default_rng(n)
    src = root / f"src{n}"
    for split in ("ref", "query"):
        (src / split).mkdir(parents=True)
        for i in range(n):
            pixels = rng.integers(0, 256, size=(side, side, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(src / split / f"{i:07d}.png", compress_level=1)
    rows = np.empty((n, 2), dtype=object)
    for q in range(n):
        rows[q, 0], rows[q, 1] = q, [q]
    np.save(src / "ground_truth_new.npy", rows, allow_pickle=True)
    return src


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="1000,10000")
    parser.add_argument("--model", default="pixels")
    parser.add_argument("--dim", type=int, default=64)
    args = parser.parse_args()
    from vprbench.models import get_card

    descriptor_dim = get_card(args.model).descriptor_dim
    peaks = []
    with tempfile.TemporaryDirectory(prefix="vprbench-mem-") as tmp:
        for n in (int(x) for x in args.sizes.split(",")):
            root = Path(tmp) / str(n)
            env = {**os.environ, "VPRBENCH_DATA": str(root / "data"),
                   "VPRBENCH_CACHE": str(root / "cache"), "VPRBENCH_RESULTS": str(root / "results")}  # fmt: skip
            src = make_dataset(root, n, args.dim)
            subprocess.run([sys.executable, "-m", "vprbench", "datasets", "import", str(src),
                            "--format", "vpr-bench", "--name", "mem"], env=env, check=True,
                           capture_output=True)  # fmt: skip
            done = subprocess.run([sys.executable, "-c", CHILD.format(model=args.model)], env=env,
                                  capture_output=True, text=True, check=True)  # fmt: skip
            peak = int(done.stdout.split("PEAK_KIB")[-1]) / 1024
            held = 2 * n * descriptor_dim * 4 / 2**20
            peaks.append(peak)
            print(json.dumps({"images": 2 * n, "peak_rss_mib": round(peak, 1),
                              "descriptors_in_memory_mib": round(held, 1)}))  # fmt: skip
    print(f"{args.model}: peak RSS ratio {args.sizes.replace(',', ' vs ')} images: "
          f"{peaks[-1] / peaks[0]:.2f} (target <= 1.2)")  # fmt: skip


if __name__ == "__main__":
    main()
