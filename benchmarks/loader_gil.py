"""What image loading costs the thread that queues a GPU's work, with loader threads and with loader
processes (`--loader threads|processes`), measured in one run on any machine, no GPU needed.

    .venv/bin/python benchmarks/loader_gil.py [--images 128] [--batch 32] [--workers 1]
        [--model d2vpr] [--seconds 1] [--repeats 9]

On CUDA the main thread queues every operation of a forward pass (about 1,500 for d2vpr) and
needs the GIL between any two of them, while loader threads take and give back the same GIL about
ten times per image. This benchmark reproduces that main thread on the CPU: ``--model``'s forward
pass on a 1x3x28x28 input, on one torch thread, is nearly all per-operation overhead, like queuing
kernels. The main thread runs it back to back for ``--seconds``:
- alone;
- while ``--workers`` loader threads decode ``--images`` 640x480 JPEGs into batches of ``--batch``
  over and over (another thread takes the batches, as extraction's main thread would);
- the same with ``--workers`` loader processes (the images written into shared memory);
``--repeats`` times, interleaved. It prints the median ms per forward pass of each, its slowdown
against the forward pass alone, the median of each repeat's threads / processes ratio, and the
loader's images/s meanwhile and alone (one pass over the images with nothing else running: what
the host can feed a GPU at most). Keep ``--workers`` below the number of CPUs, so that the main
thread has a core of its own and the difference is the GIL's, not the scheduler's.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import threading
import time
import warnings
from pathlib import Path

from generated import vpr_bench_folder

BOUND = (1, 3, 28, 28)  # a 2x2-patch input: the forward pass is all per-operation overhead


def forward_ms(model, x, seconds: float) -> float:
    """ms per forward pass, back to back for ``seconds``."""
    import torch

    calls = 0
    with torch.inference_mode():
        start = time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds:
            model(x)
            calls += 1
    return elapsed / calls * 1e3


@contextlib.contextmanager
def loading(make_batches):
    """A thread that takes ``make_batches()``'s batches, over and over, until the block ends; yields
    a function that gives the images/s so far."""
    stop, count = threading.Event(), [0]

    def take() -> None:
        while not stop.is_set():
            with contextlib.closing(iter(make_batches())) as batches:
                for _, images, _ in batches:
                    count[0] += len(images)
                    if stop.is_set():
                        break

    start = time.perf_counter()
    thread = threading.Thread(target=take, daemon=True)
    thread.start()
    try:
        yield lambda: count[0] / (time.perf_counter() - start)
    finally:
        stop.set()
        thread.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--model", default="d2vpr")
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    warnings.simplefilter("ignore")

    import torch

    from vprbench.choices import IMAGENET_MEAN, IMAGENET_STD
    from vprbench.datasets.images import ImageList, Preprocess, collate_images
    from vprbench.extract.loader import PREFETCH, ThreadedBatches, close_decoders, decoders
    from vprbench.models import create_model

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = create_model(args.model).eval()
    x = torch.randn(*BOUND)
    forward_ms(model, x, 0.5)  # warm-up
    pre = Preprocess((224, 224), "bilinear", IMAGENET_MEAN, IMAGENET_STD)
    with tempfile.TemporaryDirectory(prefix="vprbench-gil-") as tmp:
        src = vpr_bench_folder(Path(tmp), args.images // 2)
        paths = sorted((src / "ref").glob("*.jpg")) + sorted((src / "query").glob("*.jpg"))
        batches = [list(range(i, min(i + args.batch, len(paths))))
                   for i in range(0, len(paths), args.batch)]  # fmt: skip
        # uint8 items, as on CUDA; the pool is started (and warmed up) before any timing
        pool = decoders(args.workers, (PREFETCH, args.batch, 224, 224, 3), "uint8")
        list(pool.batches(paths, batches[:2], pre, False))
        loaders = {
            "threads": lambda: ThreadedBatches(
                ImageList(paths, pre, False), batches, args.workers, collate_images
            ),  # fmt: skip
            "processes": lambda: pool.batches(paths, batches, pre, False),
        }
        runs: dict[str, list[tuple[float, float]]] = {"alone": [], "threads": [], "processes": []}
        solo: dict[str, list[float]] = {"threads": [], "processes": []}
        for _ in range(args.repeats):
            runs["alone"].append((forward_ms(model, x, args.seconds), 0.0))
            for kind, make in loaders.items():
                start = time.perf_counter()
                for _ in make():
                    pass
                solo[kind].append(len(paths) / (time.perf_counter() - start))
                with loading(make) as rate:
                    ms = forward_ms(model, x, args.seconds)
                    runs[kind].append((ms, rate()))
        close_decoders()
    alone = statistics.median(ms for ms, _ in runs["alone"])
    print(f"{args.model} forward pass on {'x'.join(map(str, BOUND))} (queuing-bound), one torch "
          f"thread, {args.seconds:g} s each; {len(paths)} 640x480 JPEGs in batches of "
          f"{args.batch}, {args.workers} loader worker(s); medians of {args.repeats} interleaved "
          "repeats")  # fmt: skip
    print(f"  alone:                     {alone:7.1f} ms per forward pass")  # fmt: skip
    for kind in ("threads", "processes"):
        ms = statistics.median(v for v, _ in runs[kind])
        rate = statistics.median(r for _, r in runs[kind])
        print(f"  beside loader {kind:>9}: {ms:7.1f} ms per forward pass ({ms / alone:.2f}x), "
              f"loader alone {statistics.median(solo[kind]):6.1f} images/s, meanwhile "
              f"{rate:6.1f}")  # fmt: skip
    # per repeat, so that a shared machine's slow spells (which last longer than one repeat) cancel
    paired = statistics.median(
        t / p for (t, _), (p, _) in zip(runs["threads"], runs["processes"], strict=True)
    )
    print(f"  threads / processes, repeat by repeat: {paired:.2f}x the time per forward pass")


if __name__ == "__main__":
    main()
