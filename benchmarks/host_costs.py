"""Host-side costs of extraction that a fast GPU would wait for, each measured both ways in one run.

    .venv/bin/python benchmarks/host_costs.py [--images 64] [--descriptors 2048] [--dim 10752]
        [--batch 64] [--repeats 3] [--layout-models effnet-lite0-gem,d2vpr] [--layout-batch 32]

1. Loader time per image (one thread, generated 640x480 JPEGs to 224x224): normalised float32 items,
   as the loader threads make them for CPU extraction, against uint8 pixels, as they make them for a
   GPU (which normalises the batch itself), and the bytes of one batch of each.
2. The final .h5 after the last batch: assembling it from every shard (what extraction did before
   cache.Assembly) against finishing an assembly that took each batch as it was written (now),
   for ``--descriptors`` descriptors of ``--dim`` in shards of ``--batch``. The writes themselves
   happen in extraction's writer thread, beside the forward passes; this is what remains in series.
3. The forward pass on a batch in the loader's memory layout (channels last) against the same batch
   in NCHW, for each of ``--layout-models`` on the CPU (random weights where none ship; speed does
   not depend on them), and the largest difference between their descriptors.
Medians of ``--repeats``, interleaved.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from extract_pipeline import make_dataset

from vprbench.choices import IMAGENET_MEAN, IMAGENET_STD
from vprbench.datasets.images import ImageList, Preprocess
from vprbench.extract.cache import Assembly, DescriptorCache


def loader_costs(root: Path, n: int, batch: int, repeats: int) -> None:
    dataset = make_dataset(root, n)
    paths = [dataset.image_path(p) for p in dataset.database]
    pre = Preprocess((224, 224), "bilinear", IMAGENET_MEAN, IMAGENET_STD)
    lists = {
        "float32, normalised": ImageList(paths, pre),
        "uint8 pixels": ImageList(paths, pre, False),
    }
    for images in lists.values():  # warm the file cache and the table
        images[0]
    times: dict[str, list[float]] = {name: [] for name in lists}
    for _ in range(repeats):
        for name, images in lists.items():
            start = time.perf_counter()
            for i in range(n):
                images[i]
            times[name].append((time.perf_counter() - start) / n)
    print(f"loader, one thread, {n} 640x480 JPEGs -> 224x224, median of {repeats}:")
    for name, images in lists.items():
        item = images[0][1]
        mib = batch * item.numel() * item.element_size() / 2**20
        print(f"  {name:>20}: {1000 * statistics.median(times[name]):.2f} ms per image, "
              f"{mib:.1f} MiB per batch of {batch}")  # fmt: skip


def assembly_costs(root: Path, n: int, dim: int, batch: int, repeats: int) -> None:
    rng = np.random.default_rng(0)
    block = rng.random((batch, dim), dtype=np.float32)
    counts = {"database": n // 2, "queries": n - n // 2}
    times: dict[str, list[float]] = {"from every shard": [], "as written": []}
    for r in range(repeats):
        for name in times:
            cache = DescriptorCache(root / f"cache-{r}-{name.replace(' ', '-')}")
            key = {"dataset": "bench", "model": "m", "run": r}
            folder, _ = cache.open_partial(key, batch)
            assembly = Assembly(cache, key, folder, counts)
            for split, count in counts.items():
                for b in range(-(-count // batch)):
                    rows = np.arange(b * batch, min(count, (b + 1) * batch))
                    args = (block[: len(rows)], np.ones(len(rows), bool), rows)
                    cache.write_shard(folder, split, b, *args)
                    if name == "as written":
                        assembly.add(split, b, *args)
            start = time.perf_counter()
            assembly.finish(batch)
            times[name].append(time.perf_counter() - start)
    print(f"final .h5 of {n} x {dim} descriptors (shards of {batch}), after the last batch, "
          f"median of {repeats}:")  # fmt: skip
    for name, values in times.items():
        print(f"  {name:>20}: {statistics.median(values):.3f} s")
    ratio = statistics.median(times["from every shard"]) / statistics.median(times["as written"])
    print(f"  assembling from every shard takes {ratio:.1f}x as long")


def layout_costs(models: list[str], batch: int, repeats: int) -> None:
    import warnings

    import torch

    from vprbench import allocator
    from vprbench.models import create_model

    allocator.reuse_freed_memory()  # as extraction runs
    print(
        f"forward pass, CPU ({torch.get_num_threads()} threads), batch {batch}, median of {repeats}:"
    )
    for name in models:
        torch.manual_seed(0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = create_model(name).eval()
        x = torch.rand(batch, 3, *model.card.image_size)
        inputs = {"NCHW": x, "channels last": x.contiguous(memory_format=torch.channels_last)}
        times: dict[str, list[float]] = {k: [] for k in inputs}
        outs = {}
        with torch.inference_mode():
            for k, v in inputs.items():
                outs[k] = model(v)  # warm-up
            for _ in range(repeats):
                for k, v in inputs.items():
                    start = time.perf_counter()
                    model(v)
                    times[k].append(time.perf_counter() - start)
        rate = {k: batch / statistics.median(v) for k, v in times.items()}
        diff = (outs["NCHW"] - outs["channels last"]).abs().max().item()
        print(f"  {name:>20}: NCHW {rate['NCHW']:.1f} images/s, channels last "
              f"{rate['channels last']:.1f} ({rate['channels last'] / rate['NCHW']:.2f}x), "
              f"largest descriptor difference {diff:.1e}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--descriptors", type=int, default=2048)
    parser.add_argument("--dim", type=int, default=10752)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--layout-models", default="effnet-lite0-gem,d2vpr")
    parser.add_argument("--layout-batch", type=int, default=32)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vprbench-host-") as tmp:
        loader_costs(Path(tmp) / "loader", args.images, args.batch, args.repeats)
        assembly_costs(Path(tmp) / "h5", args.descriptors, args.dim, args.batch, args.repeats)
    if args.layout_models:
        layout_costs(args.layout_models.split(","), args.layout_batch, args.repeats)


if __name__ == "__main__":
    main()
