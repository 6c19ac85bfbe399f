"""Extraction pipeline efficiency: end-to-end `extract` (decode, resize, transfer, forward, cache
write) against the model alone on the same device and batch, measured in one run.

    .venv/bin/python benchmarks/extract_pipeline.py [--model effnet-lite0-gem[,...]] [--images 256]
        [--batch 32] [--device cpu|cuda] [--dtype fp32[,bf16]] [--workers auto,0,1,2]
        [--decode pil[,device]] [--loader threads[,processes]] [--set K=V] [--write-delay MS]

It writes ``--images`` generated 640x480 JPEGs (quality 90, the size of Pitts30k/MSLS images) as a
dataset, then measures:
- model only: the forward pass on preprocessed tensors already on the device (one warm-up batch);
- end to end: ``extract`` into an empty cache, for each ``--workers`` value (``auto`` is vprbench's
  default for the device) and each ``--decode`` (``device``: torchvision decodes and resizes on the
  device, nvJPEG on CUDA; it also prints how far its descriptors are from PIL decoding's) and each
  ``--loader`` (PIL decoding in threads or in processes; not with ``--decode device``, nor with 0
  workers),
each ``--repeats`` times, interleaved, and prints the median images/s and the ratio end-to-end /
model-only (the target is at least 0.90). ``--write-delay`` makes every shard write slower, as on a
slow disk: the writer thread should hide it while it stays below a batch's forward time.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from pathlib import Path

from generated import vpr_bench_folder


def make_dataset(root: Path, n: int):
    """``n`` queries that are noisy copies of ``n`` database JPEGs, formatted as 'bench'."""
    from vprbench.datasets.formatted import load_formatted
    from vprbench.datasets.manage import import_dataset
    from vprbench.datasets.protocols import load_registry

    src = vpr_bench_folder(root / "src", n)
    import_dataset(src, "vpr-bench", "bench", root / "data", load_registry())
    return load_formatted("bench", root / "data")


def preprocessed(dataset, preprocess):
    """The images of each split of ``dataset`` preprocessed by the default (PIL) path and stacked on
    the CPU as the loader stacks a batch: in the same memory layout (channels last), on which
    effnet-lite0 runs 1.38x as fast as on NCHW (host_costs.py). A reference in another layout
    measures another forward."""
    from concurrent.futures import ThreadPoolExecutor

    from vprbench.datasets.images import ImageList, collate_images
    from vprbench.extract.settings import available_cpus

    out = []
    for split in (dataset.database, dataset.queries):
        images = ImageList([dataset.image_path(p) for p in split], preprocess)
        with ThreadPoolExecutor(available_cpus()) as pool:  # PIL and numpy release the GIL
            out.append(collate_images(list(pool.map(images.__getitem__, range(len(split)))))[1])
    return out


def model_only(model, splits, batch: int, device: str, dtype: str) -> float:
    """Images/s of the forward pass alone, on tensors preprocessed beforehand and on the device, in
    the batches extraction makes (batches never straddle the database/query boundary)."""
    import torch

    splits = [x.to(device) for x in splits]
    batches = [x[i : i + batch] for x in splits for i in range(0, len(x), batch)]
    n = sum(len(x) for x in splits)
    amp = torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=dtype == "bf16")
    with torch.inference_mode(), amp:
        model(batches[0])  # warm-up
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        for b in batches:
            out = model(b)
        out.float().cpu()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
    return n / (time.perf_counter() - start)


def measure(args, root: Path, dataset, model_name: str, dtype: str, tensors: dict) -> None:
    """One model and dtype: model only, then each (workers, decode) end to end, interleaved."""
    import numpy as np
    import torch

    from vprbench.extract.run import extract
    from vprbench.extract.settings import WRITER_STAGES, ExtractSettings, default_workers
    from vprbench.models import create_model
    from vprbench.yamlfile import parse_overrides

    overrides = parse_overrides(args.set)
    torch.manual_seed(0)
    model = create_model(model_name, **overrides).to(args.device)
    base = ExtractSettings(model=model_name, overrides=overrides, batch_size=args.batch,
                           device=args.device, dtype=dtype)  # fmt: skip
    tag = f"{model_name}-{dtype}"
    first = extract(dataset, base, root / f"warmup-{tag}", model=model)  # warms up the kernels
    for w in args.workers.split(","):  # starts the loader processes (once per run of vprbench)
        if ("pil", "processes") in settings_to_run(args, w, torch.device(args.device)):
            workers = None if w == "auto" else int(w)
            warm = ExtractSettings(**{**base.__dict__, "workers": workers, "loader": "processes"})
            extract(dataset, warm, root / f"warmup-{tag}-{w}-processes", model=model)
    if first.preprocess not in tensors:
        tensors[first.preprocess] = preprocessed(dataset, first.preprocess)
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    threads = torch.get_num_threads()
    print(f"{model_name}, {2 * args.images} 640x480 JPEGs, batch {args.batch}, {dtype}, "
          f"{args.device} ({name}, {threads} torch threads), median of {args.repeats} "
          "interleaved repeats", flush=True)  # fmt: skip
    # Interleaved repeats (model only, then each setting, again and again): a shared machine's slow
    # spells fall on all of them alike.
    rates: dict[tuple, list[float]] = {}
    results, stages = {}, {}
    for i in range(args.repeats):
        x = tensors[first.preprocess]
        rates.setdefault(("model", ""), []).append(
            model_only(model, x, args.batch, args.device, dtype)
        )
        for w in args.workers.split(","):
            for decode, loader in settings_to_run(args, w, device):
                workers = None if w == "auto" else int(w)
                settings = ExtractSettings(
                    **{**base.__dict__, "workers": workers, "decode": decode, "loader": loader}
                )
                start = time.perf_counter()
                cache = root / f"cache-{tag}-{w}-{decode}-{loader}-{i}"
                out = extract(dataset, settings, cache, model=model)
                rates.setdefault((w, decode, loader), []).append(
                    2 * args.images / (time.perf_counter() - start)
                )
                results[decode] = out.descriptors.queries[...]
                stages[(w, decode, loader)] = (out.timings, out.seconds)
    reference = statistics.median(rates.pop(("model", "")))
    print(f"  model only: {reference:8.1f} images/s")
    for (w, decode, loader), values in rates.items():
        rate = statistics.median(values)
        shown = f"auto={default_workers(device)}" if w == "auto" else w
        how = f"decode {decode}" if decode != "pil" else f"{loader} decode"
        print(f"  end to end, workers {shown:>6}, {how:>17}: {rate:8.1f} images/s, "
              f"ratio {rate / reference:.2f}")  # fmt: skip
        timings, total = stages[(w, decode, loader)]
        print("    main thread, last repeat: " + ", ".join(
            f"{k} {v:.2f} s" for k, v in timings.items() if v >= 0.005 and k not in WRITER_STAGES
        ) + f" (of {total:.2f} s); writer thread: " + ", ".join(
            f"{k} {timings[k]:.2f} s" for k in WRITER_STAGES))  # fmt: skip
    if len(results) > 1:
        pil, dev = results["pil"], results["device"]
        cos = (pil * dev).sum(1)
        print(f"  decode device vs pil: query descriptors' cosine min {cos.min():.5f}, "
              f"largest element difference {np.abs(pil - dev).max():.2e}")  # fmt: skip


def settings_to_run(args, workers: str, device) -> list[tuple[str, str]]:
    """(decode, loader) pairs for one ``--workers`` value: loader processes only decode with PIL,
    and only when there are workers."""
    from vprbench.extract.settings import default_workers

    count = default_workers(device) if workers == "auto" else int(workers)
    return [
        (decode, loader)
        for decode in args.decode.split(",")
        for loader in args.loader.split(",")
        if loader == "threads" or (decode == "pil" and count > 0)
    ]


def slow_disk(seconds: float) -> None:
    """Every shard write takes ``seconds`` longer, as an fsync on a slow (network) disk would."""
    from vprbench.extract.cache import DescriptorCache

    write = DescriptorCache.write_shard

    def slow(*args, **kwargs):
        time.sleep(seconds)
        write(*args, **kwargs)

    DescriptorCache.write_shard = staticmethod(slow)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="effnet-lite0-gem", help="one or more, comma-separated")
    parser.add_argument("--images", type=int, default=256, help="database images (as many queries)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="fp32", help="fp32, bf16 or both, comma-separated")
    parser.add_argument("--workers", default="auto,0,1,2")
    parser.add_argument("--decode", default="pil", help="pil, device or both, comma-separated")
    parser.add_argument("--loader", default="threads", help="threads, processes or both")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--write-delay", type=float, default=0.0, metavar="MS",
                        help="a slow disk: each shard write takes MS milliseconds longer")  # fmt: skip
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    if args.write_delay:
        slow_disk(args.write_delay / 1000)
    with tempfile.TemporaryDirectory(prefix="vprbench-pipeline-") as tmp:
        root = Path(tmp)
        dataset = make_dataset(root, args.images)  # once, for every model and dtype
        tensors: dict = {}
        for model_name in args.model.split(","):
            for dtype in args.dtype.split(","):
                measure(args, root, dataset, model_name, dtype, tensors)


if __name__ == "__main__":
    main()
