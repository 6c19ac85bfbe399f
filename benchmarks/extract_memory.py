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

from generated import vpr_bench_folder

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
            src = vpr_bench_folder(root / "src", n, "png", args.dim, seed=n)
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
