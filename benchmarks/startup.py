"""Start-up and warm-cache times of the command line, measured in one run (each command in a fresh
process, wall-clock, median of ``--repeats``):

    .venv/bin/python benchmarks/startup.py [--images 5000] [--model effnet-lite0-gem] [--repeats 3]
        [--no-extraction]

1. `vprbench --help` and `vprbench datasets list` (target: under 0.5 s), and the commands that only
   read registries or check arguments: `datasets info`, `models list`, `models info`, a typo in a
   model name, a missing weights file (target: under 1 s each), each with its ratio to a bare
   `python -c "import torch"` (the cost they no longer pay);
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


def timed(args: list[str], env: dict, repeats: int = 1, fails: bool = False) -> float:
    """Median wall-clock seconds of ``vprbench ARGS`` in a fresh process (``fails``: the command
    is an argument error and must exit 1)."""
    return _timed([sys.executable, "-m", "vprbench", *args], env, repeats, 1 if fails else 0)


def _timed(command: list[str], env: dict, repeats: int, code: int = 0) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        done = subprocess.run(command, env=env, capture_output=True)
        times.append(time.perf_counter() - start)
        if done.returncode != code:
            raise SystemExit(f"{command}: exit {done.returncode}, expected {code}: {done.stderr}")
    return statistics.median(times)


LIGHT = (
    ("vprbench datasets info sped", ["datasets", "info", "sped"], False),
    ("vprbench models list", ["models", "list"], False),
    ("vprbench models info d2vpr", ["models", "info", "d2vpr"], False),
    ("extract --model d2vpx (typo)", ["extract", "--model", "d2vpx", "--dataset", "sped"], True),
    ("evaluate --weights missing.pth", ["evaluate", "--model", "effnet-lite0-gem", "--dataset",
                                        "nordland-sample", "--weights", "missing.pth"], True),
)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--model", default="effnet-lite0-gem")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-extraction", action="store_true", help="Only the start-up times.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vprbench-startup-") as tmp:
        root = Path(tmp)
        env = {**os.environ, "VPRBENCH_DATA": str(root / "data"),
               "VPRBENCH_CACHE": str(root / "cache"), "VPRBENCH_RESULTS": str(root / "results")}  # fmt: skip
        print(f"vprbench --help:          {timed(['--help'], env, args.repeats):6.2f} s")
        print(f"vprbench datasets list:   {timed(['datasets', 'list'], env, args.repeats):6.2f} s")
        torch = _timed([sys.executable, "-c", "import torch"], env, args.repeats)
        print(f"python -c 'import torch': {torch:6.2f} s")
        for label, command, fails in LIGHT:
            seconds = timed(command, env, args.repeats, fails)
            print(f"{label + ':':32s} {seconds:6.2f} s ({seconds / torch:.2f} of import torch)")
        if args.no_extraction:
            return
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
