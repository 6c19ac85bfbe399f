"""Extraction throughput, bf16 autocast against fp32, measured in one run on the same inputs.

    .venv/bin/python benchmarks/extract_dtype.py [--model effnet-lite0-gem] [--batch 32] [--repeats 5]

Prints images/s for each dtype (median of repeats, one warm-up pass excluded, no data loading: the inputs
are tensors already in memory), the ratio, and how far bf16 descriptors are from fp32 ones (min cosine).
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch
import torch.nn.functional as F

from vprbench.models import create_model


def images_per_second(model, x, dtype, repeats):
    times = []
    with torch.inference_mode():
        for i in range(repeats + 1):
            start = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bf16"):
                out = model(x)
            elapsed = time.perf_counter() - start
            if i:  # the first pass is warm-up
                times.append(elapsed)
    return x.shape[0] / statistics.median(times), F.normalize(out.float(), dim=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="effnet-lite0-gem")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    from vprbench.models import parse_overrides

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(0)
        model = create_model(args.model, **parse_overrides(args.set))
    h, w = model.card.image_size
    x = torch.rand(args.batch, 3, h, w)
    fp32, d32 = images_per_second(model, x, "fp32", args.repeats)
    bf16, d16 = images_per_second(model, x, "bf16", args.repeats)
    cosine = (d32 * d16).sum(dim=1).min().item()
    print(
        f"model {args.model}, input {h}x{w}, batch {args.batch}, threads {torch.get_num_threads()}"
    )
    print(f"fp32: {fp32:8.1f} images/s")
    print(f"bf16: {bf16:8.1f} images/s")
    print(
        f"bf16 / fp32 throughput ratio: {bf16 / fp32:.2f}x; min cosine(bf16, fp32) = {cosine:.5f}"
    )


if __name__ == "__main__":
    main()
