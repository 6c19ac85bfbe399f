"""TDDA offset generator computed once per image (vprbench) against once per region (the official
code, 13 times): latency of the whole d2vpr forward and of the aggregator alone, in one run.

    .venv/bin/python benchmarks/tdda_offsets.py [--batch 4] [--repeats 10]

Prints medians (warm-up excluded) and the speed-up ratios, and checks the descriptors agree to 1e-6.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch

from vprbench.models import create_model


def median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(0)
        model = create_model("d2vpr").eval()
    x = torch.rand(args.batch, 3, 224, 224)
    tdda = model.aggregator
    with torch.inference_mode():
        cls, patches = model.tokens(x)
        results = {}
        for label, per_region in (("once", False), ("official", True)):
            tdda.recompute_offsets_per_region = per_region
            results[label] = {
                "model": median_seconds(lambda: model(x), args.repeats),
                "tdda": median_seconds(lambda: tdda(cls, patches), args.repeats),
                "out": model(x),
            }
    diff = (results["once"]["out"] - results["official"]["out"]).abs().max().item()
    print(
        f"d2vpr, batch {args.batch}, 224x224, {torch.get_num_threads()} threads, {args.repeats} repeats"
    )
    for part in ("model", "tdda"):
        once, official = results["once"][part], results["official"][part]
        print(f"{part:6s} official {1000 * official:8.1f} ms   once {1000 * once:8.1f} ms   "
              f"speed-up {official / once:.2f}x")  # fmt: skip
    print(f"max |descriptor difference| = {diff:.2e}")


if __name__ == "__main__":
    main()
