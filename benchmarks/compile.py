"""torch.compile against eager for extraction, measured in one run on the same inputs: images/s of
each (median of repeats after warm-up; the compile time is printed apart) and the largest difference
between their L2-normalised descriptors (vprbench leaves --compile out of the cache key only while
that stays within extract.COMPILE_TOLERANCE).

    .venv/bin/python benchmarks/compile.py [--model d2vpr] [--batch 8] [--device cpu] [--dtype fp32]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch
import torch.nn.functional as F

from vprbench.extract.settings import COMPILE_TOLERANCE
from vprbench.models import create_model, get_card
from vprbench.yamlfile import parse_overrides


def rate(forward, x, repeats: int, device: str) -> tuple[float, torch.Tensor]:
    times = []
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = forward(x)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return x.shape[0] / statistics.median(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="d2vpr")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="fp32")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    torch.manual_seed(0)
    model = create_model(args.model, **parse_overrides(args.set)).to(args.device).eval()
    h, w = get_card(args.model).image_size
    x = torch.rand(args.batch, 3, h, w, device=args.device)
    amp = dict(device_type=torch.device(args.device).type, dtype=torch.bfloat16,
               enabled=args.dtype == "bf16")  # fmt: skip

    def eager(t):
        with torch.inference_mode(), torch.autocast(**amp):
            return F.normalize(model(t).float(), dim=1)

    compiled_model = torch.compile(model, dynamic=True)

    def compiled(t):
        with torch.inference_mode(), torch.autocast(**amp):
            return F.normalize(compiled_model(t).float(), dim=1)

    eager(x)
    start = time.perf_counter()
    compiled(x)
    compile_s = time.perf_counter() - start
    r_eager, a = rate(eager, x, args.repeats, args.device)
    r_comp, b = rate(compiled, x, args.repeats, args.device)
    diff = (a - b).abs().max().item()
    print(f"{args.model} batch {args.batch} {args.dtype} on {args.device}: eager {r_eager:.1f} "
          f"images/s, compiled {r_comp:.1f} images/s ({r_comp / r_eager:.2f}x), first compiled "
          f"call {compile_s:.0f} s; max |compiled - eager| {diff:.2e} "
          f"({'within' if diff <= COMPILE_TOLERANCE else 'BEYOND'} {COMPILE_TOLERANCE:g})")  # fmt: skip


if __name__ == "__main__":
    main()
