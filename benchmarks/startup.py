"""Start-up and warm-cache times of the command line, measured in one run (each command in a fresh
process, wall-clock, median of ``--repeats``):

    .venv/bin/python benchmarks/startup.py [--images 5000] [--model effnet-lite0-gem] [--repeats 3]

1. `vprbench --help` and `vprbench datasets list` (target: under 0.5 s);
2. a warm `vprbench evaluate --model effnet-lite0-gem --dataset nordland-sample` (its descriptors
   cached by a first, cold run; target: under 1.5 s, start-up included);
3. on a generated set of ``--images`` database and as many query images (640x480 JPEGs), the cold
   evaluate (extraction) against the warm one: the warm run needs neither the model nor its weights
   nor torch (target: at least 50x faster).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from generated import vpr_bench_folder


def timed(args: list[str], env: dict, repeats: int = 1) -> float:
    """Median wall-clock seconds of ``vprbench ARGS`` in a fresh process."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "vprbench", *args], env=env, check=True,
                       capture_output=True)  # fmt: skip
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--model", default="effnet-lite0-gem")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vprbench-startup-") as tmp:
        root = Path(tmp)
        env = {**os.environ, "VPRBENCH_DATA": str(root / "data"),
               "VPRBENCH_CACHE": str(root / "cache"), "VPRBENCH_RESULTS": str(root / "results")}  # fmt: skip
        print(f"vprbench --help:          {timed(['--help'], env, args.repeats):6.2f} s")
        print(f"vprbench datasets list:   {timed(['datasets', 'list'], env, args.repeats):6.2f} s")
        sample = ["evaluate", "--model", args.model, "--dataset", "nordland-sample"]
        cold = timed(sample, env)
        warm = timed(sample, env, args.repeats)
        print(f"evaluate nordland-sample: cold {cold:6.2f} s, warm {warm:6.2f} s")
        src = vpr_bench_folder(root / "src", args.images)
        subprocess.run([sys.executable, "-m", "vprbench", "datasets", "import", str(src), "--format",
                        "vpr-bench", "--name", "gen"], env=env, check=True, capture_output=True)  # fmt: skip
        generated = ["evaluate", "--model", args.model, "--dataset", "gen"]
        cold = timed(generated, env)
        warm = timed(generated, env, args.repeats)
        print(f"evaluate {2 * args.images:,} generated images: cold (extraction) {cold:7.1f} s, "
              f"warm {warm:5.2f} s, {cold / warm:.0f}x faster")  # fmt: skip


if __name__ == "__main__":
    main()
