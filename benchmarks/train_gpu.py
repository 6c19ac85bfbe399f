"""Training steps on a CUDA GPU: fine-tuning throughput of d2vpr in fp32, fp16 (GradScaler) and bf16
mixed precision, and a distillation step with a CricaVPR teacher, on the embedded
nordland-train-sample at 224x224 (random init: this measures speed and checks that every precision
trains with finite losses, not accuracy).

    python benchmarks/train_gpu.py [--steps 12] [--places 32] [--workers 8]

Prints images/s per precision (median over the steps after the first two) and the ratios to fp32,
all measured in this one run on one GPU.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from vprbench.train import config_from, train


def run(stage: str, dtype: str, args, root: Path, **extra) -> dict:
    out = root / f"{stage}-{dtype}"
    values = dict(data="nordland-train-sample", out=str(out), device="cuda", dtype=dtype,
                  places_per_batch=args.places, images_per_place=4, epochs=100,
                  max_steps=args.steps, warmup_steps=0, workers=args.workers,
                  checkpoint_every=10**9)  # fmt: skip
    values.update(extra)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    train(config_from(stage, **values))
    seconds = time.perf_counter() - start
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    speeds = [r["images_per_s"] for r in rows if "loss" in r][2:]
    return {
        "stage": stage,
        "dtype": dtype,
        "steps": len(losses),
        "finite": all(torch.isfinite(torch.tensor(losses)).tolist()),
        "first_loss": losses[0],
        "last_loss": losses[-1],
        "images_per_s": statistics.median(speeds) if speeds else float("nan"),
        "peak_gib": torch.cuda.max_memory_allocated() / 2**30,
        "seconds": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--places", type=int, default=32)
    parser.add_argument("--workers", type=int, default=8)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("needs a CUDA GPU")
    print(f"device: {torch.cuda.get_device_name()} torch {torch.__version__}")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for dtype in ("fp32", "fp16", "bf16"):
            results.append(run("finetune", dtype, args, root, model="d2vpr"))
        results.append(run("distill", "fp16", args, root, model="d2vpr", teacher="cricavpr",
                           allow_random_teacher=True))  # fmt: skip
    base = results[0]["images_per_s"]
    print(f"{'stage':9} {'dtype':5} {'steps':>5} {'finite':>6} {'loss first->last':>18} "
          f"{'img/s':>8} {'vs fp32':>7} {'peak GiB':>8}")  # fmt: skip
    for r in results:
        print(f"{r['stage']:9} {r['dtype']:5} {r['steps']:5d} {str(r['finite']):>6} "
              f"{r['first_loss']:8.4f}->{r['last_loss']:8.4f} {r['images_per_s']:8.1f} "
              f"{r['images_per_s'] / base:6.2f}x {r['peak_gib']:8.2f}")  # fmt: skip
    print(json.dumps(results))


if __name__ == "__main__":
    main()
