"""The extraction loop: build the model (or answer from the cache), then compute each split's
missing batches into the cache, loader threads or processes feeding the device and a writer thread
storing each batch's shard while the next is computed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
import warnings
from pathlib import Path

import numpy as np

from vprbench import allocator
from vprbench.datasets.formatted import FormattedDataset
from vprbench.datasets.images import (
    INTERPOLATIONS,
    EncodedImageList,
    ImageList,
    Preprocess,
    collate_encoded,
    collate_images,
    decode_on_device,
    normalise_batch,
)
from vprbench.errors import VPRBenchError
from vprbench.extract.cache import SPLITS, Assembly, DescriptorCache, entry_splits
from vprbench.extract.distributed import compute_shared
from vprbench.extract.request import (
    cache_key,
    from_request,
    image_fingerprints,
    request_key,
    resolve_preprocess,
    save_request,
    shared_database,
    split_order,
)
from vprbench.extract.settings import (
    SHUFFLE_SEED,
    STAGES,
    WRITE_DEPTH,
    ExtractResult,
    ExtractSettings,
    ModelSummary,
    ProgressFactory,
    resolve_batch_size,
    resolve_loader,
    validate,
)

# Fault injection for the resume tests: seconds to sleep after each written batch.
_SLEEP_ENV = "VPRBENCH_FAULT_SLEEP_PER_BATCH"


def _compiled(model):
    """``torch.compile`` of ``model`` (dynamic batch size), made once per model object."""
    import torch

    if "_vprbench_compiled" not in model.__dict__:  # not a submodule: no state-dict keys, no cycle
        model.__dict__["_vprbench_compiled"] = torch.compile(model, dynamic=True)
    return model.__dict__["_vprbench_compiled"]


def _autocast_dtype(name: str):
    import torch

    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[name]


def extract(
    dataset: FormattedDataset,
    settings: ExtractSettings,
    cache_dir: Path,
    progress: ProgressFactory | None = None,
    model=None,
) -> ExtractResult:
    """Descriptors of every database and query image of ``dataset`` with ``settings``, from the cache
    when present; otherwise computed batch by batch (resuming any earlier partial run) and cached.
    ``model``: an already built model (a VPRModel) to use instead of building one from ``settings``."""
    validate(settings)
    if settings.device == "cuda" and int(os.environ.get("WORLD_SIZE", "1") or 1) > 1:
        # torchrun: one GPU per process
        settings = dataclasses.replace(settings, device=f"cuda:{os.environ.get('LOCAL_RANK', 0)}")
    start = time.perf_counter()
    images = image_fingerprints(dataset)
    timings = dict.fromkeys(STAGES, 0.0)
    timings["fingerprint"] = time.perf_counter() - start
    request = None
    files: list = []
    if model is None:
        request = request_key(dataset, settings, images["all"])
        warm = from_request(request, cache_dir)
        if warm is not None:
            return warm
        import torch

        from vprbench.models.registry import create_model, get_card, resolve_options
        from vprbench.models.weights import track_hashed_files

        options = resolve_options(get_card(settings.model), settings.overrides or {})
        torch.manual_seed(0)  # random-init models are then reproducible, and cacheable
        with track_hashed_files() as files:
            model = create_model(
                settings.model, weights=settings.weights, cache_dir=cache_dir, **options
            )
        if settings.local is not None:  # a re-ranker's local features (vprbench.rerank.local)
            from vprbench.rerank import get_reranker
            from vprbench.rerank.local import LocalFeatures

            model = LocalFeatures(model, get_reranker(settings.local))
    card = model.card
    preprocess = resolve_preprocess(card, settings)
    if preprocess.interpolation not in INTERPOLATIONS:
        raise VPRBenchError(f"model card '{card.name}': unknown interpolation")
    if preprocess.image_size is None and model.batch_dependent:
        raise VPRBenchError(
            f"model '{card.name}' is batch-dependent (its descriptors depend on which images share "
            "a batch), and native resolution batches images by size: pass --image-size H W"
        )
    batch_size, batch_source = resolve_batch_size(settings, dataset, model)
    order = dataset.manifest.get("batch_order", {}).get("note", "listed order")
    if settings.batch_order == "shuffled":
        order = f"shuffled batches (seed {SHUFFLE_SEED}), not the official order"
    order = order if model.batch_dependent else ""
    cache = DescriptorCache(cache_dir)
    key = cache_key(model, dataset, preprocess, settings, batch_size, images,
                    shared_database(dataset))  # fmt: skip

    from vprbench.extract.official import differences, official_preprocess

    official_batch = None
    if model.batch_dependent and card.batch_convention:
        official_batch = resolve_batch_size(dataclasses.replace(settings, batch_size=None),
                                            dataset, model)[0]  # fmt: skip
    official = {
        "dtype": card.dtype,
        "pca_dim": card.pca_dim,
        "preprocess": official_preprocess(card).as_dict(),
        "differences": differences(card, preprocess, settings.dtype,
                                   dataset.manifest.get("protocol"), model.weights_info.release,
                                   (batch_size, official_batch) if official_batch else None),
    }  # fmt: skip

    def result(cached, shard_batch, computed, seconds, skipped):
        out = ExtractResult(cached, ModelSummary.of(model), preprocess, shard_batch, computed,
                            seconds, skipped, batch_source, order, model, official=official)  # fmt: skip
        if request is not None:
            save_request(cache_dir, request, out, files)
        return out

    cached = cache.load(key)
    if cached is not None:
        return result(cached, batch_size, False, 0.0, {})

    # A protocol over a shared database is two entries, the database's (made once for every
    # protocol that shares it) and the queries'; any other is one entry of both splits.
    entries = [key] if "database_entry" not in key else [key["database_entry"], key]
    skipped: dict[str, list[str]] = {split: [] for split in SPLITS}
    shard_batch, computed = batch_size, False
    for entry in entries:  # compute_shared checks each under the lock, after a barrier of all ranks
        splits = entry_splits(entry)

        def compute(folder, shard_batch, part, assembly, splits=splits):
            allocator.reuse_freed_memory()  # freed activations reused, not faulted in again
            return {
                split: _extract_split(model, dataset, split, preprocess, settings, folder,
                                      shard_batch, progress if part[0] == 0 else None, part,
                                      timings, assembly)
                for split in splits
            }  # fmt: skip

        counts = {split: len(dataset.split(split)) for split in splits}
        found, shard_batch, entry_skipped = compute_shared(
            cache, entry, batch_size, settings.device, counts, compute, timings
        )
        computed = computed or not found  # found: complete already, or finished by another process
        skipped |= entry_skipped
    if not computed:
        return result(cache.load(key), batch_size, False, 0.0, {})
    allocator.release_freed_memory()
    cached = cache.load(key)
    assert cached is not None
    out = result(cached, shard_batch, True, time.perf_counter() - start, skipped)
    out.timings = timings
    return out


def _image_batches(settings, device, paths, batches, batch_size, preprocess, normalise: bool):
    """The batches of images of ``paths`` as the loader of ``settings`` (resolve_loader) makes them
    on the host: in pinned memory on CUDA, for copies that do not block. Loader processes get a ring
    of ``batch_size`` rows per batch, so that one pool serves both splits and a resumed run. A
    default of processes that finds too little shared memory warns and uses threads; a named one
    fails."""
    from vprbench.extract.loader import PREFETCH, SharedMemoryTooSmall, ThreadedBatches, decoders

    native = preprocess.image_size is None
    loader, workers = resolve_loader(settings, device, native)
    on_device = settings.decode == "device"
    pin = device.type == "cuda" and not on_device
    if loader == "processes":
        h, w = preprocess.image_size
        ring = (PREFETCH, batch_size, h, w, 3)
        try:
            pool = decoders(workers, ring, "float32" if normalise else "uint8")
            return pool.batches(paths, batches, preprocess, normalise, pin)
        except SharedMemoryTooSmall as exc:
            if settings.loader == "processes":
                raise
            warnings.warn(f"{exc}: decoding in loader threads instead", stacklevel=3)
    return ThreadedBatches(
        EncodedImageList(paths) if on_device else ImageList(paths, preprocess, normalise),
        batches,
        workers,
        collate_encoded if on_device or native else collate_images,
        pin=pin,
    )


def _extract_split(
    model,
    dataset: FormattedDataset,
    split: str,
    preprocess: Preprocess,
    settings: ExtractSettings,
    folder: Path,
    batch_size: int,
    progress: ProgressFactory | None,
    part: tuple[int, int] = (0, 1),
    timings: dict[str, float] | None = None,
    assembly: Assembly | None = None,
) -> list[str]:
    """Compute the missing batches of one split into shards; returns the skipped image paths.
    ``part`` (rank, world size): this process computes the batches whose number % world == rank.
    ``assembly``: the final file, which each batch also goes into once its shard is written."""
    import torch

    from vprbench.extract.loader import InOrderCalls

    paths = [dataset.image_path(p) for p in dataset.split(split)]
    n_batches = -(-len(paths) // batch_size)
    rank, world = part
    todo = [
        b
        for b in range(rank, n_batches, world)
        if not DescriptorCache.shard_path(folder, split, b).is_file()
    ]
    # Batches never straddle the database/query boundary. A batch-dependent model (its descriptors
    # depend on which images share a batch) batches in the protocol's official order; others in
    # dataset order, which changes nothing for them.
    order = (
        split_order(dataset, split, settings.batch_order)
        if model.batch_dependent
        else np.arange(len(paths))
    )
    batches = [order[b * batch_size : (b + 1) * batch_size].tolist() for b in todo]
    tick = progress(f"{dataset.name} {split}", len(paths)) if progress else None
    if tick:
        tick(len(paths) - sum(len(b) for b in batches))
    if not batches:
        return []
    device = torch.device(settings.device)
    on_device = settings.decode == "device"
    # On the CPU the loader normalises each image; elsewhere it ships uint8 pixels (a quarter of the
    # bytes to stack, pin and copy) and the device normalises the batch, to the same bits, unless the
    # official pipeline resizes float values (normalised first): then the loader does it all.
    normalise_in_loader = device.type == "cpu" or preprocess.float_resize
    table = preprocess.table()
    loader = _image_batches(
        settings, device, paths, batches, batch_size, preprocess, normalise_in_loader
    )
    model.to(device)
    forward = _compiled(model) if settings.compile else model
    normalise_output = not getattr(model, "output_normalised", False)
    sleep = float(os.environ.get(_SLEEP_ENV, "0") or 0)
    skipped: list[str] = []
    timings = {} if timings is None else timings
    clock = time.perf_counter

    def spent(stage: str, since: float) -> float:
        now = clock()
        timings[stage] = timings.get(stage, 0.0) + now - since
        return now

    def store(b, indices, errors, valid, out) -> None:
        tic = clock()
        desc = np.zeros((len(errors), 0), dtype=np.float32)  # no valid image: width unknown
        if out is not None:
            out = out.cpu().numpy()
            desc = np.zeros((len(errors), out.shape[1]), dtype=np.float32)
            desc[valid] = out
        tic = spent("device_wait", tic)
        DescriptorCache.write_shard(folder, split, b, desc, valid, indices.numpy())
        if assembly is not None:
            assembly.add(split, b, desc, valid, indices.numpy())
        spent("shard_write", tic)
        if tick:
            tick(len(indices))
        if sleep:
            time.sleep(sleep)

    # A writer thread fetches each batch's descriptors and writes its shard while the main thread
    # goes on to the next batches: on CUDA the fetch waits for the forward pass, and by then the next
    # one is queued, so the GPU never waits for the host between batches, nor for the disk.
    # closing: a loader left on an error stops preparing batches now (loader processes would
    # otherwise go on writing into the ring that the next extraction reuses)
    with InOrderCalls(store, WRITE_DEPTH) as writer, contextlib.closing(iter(loader)) as ready:
        tic = clock()
        for b, (indices, images, errors) in zip(todo, ready, strict=True):
            tic = spent("loader_wait", tic)
            if on_device:
                images, errors = decode_on_device(
                    images, errors, preprocess, [paths[i] for i in indices.tolist()], device
                )
                tic = spent("decode_on_device", tic)
            bad = [e for e in errors if e]
            if bad and settings.on_bad_image == "error":
                raise VPRBenchError(bad[0] + "; use --on-bad-image skip to leave it out")
            skipped.extend(bad)
            valid = np.array([not e for e in errors], dtype=bool)
            out = None
            if valid.any():
                # Unreadable images stay out of the forward pass: in a batch-dependent model they
                # would change their batch-mates' descriptors.
                if isinstance(images, list):  # native resolution: images of several sizes
                    batch = [im for im, ok in zip(images, valid, strict=True) if ok]
                else:
                    keep = torch.from_numpy(valid).to(images.device)
                    batch = images[keep] if not valid.all() else images
                with (
                    torch.inference_mode(),
                    torch.autocast(
                        device.type,
                        dtype=_autocast_dtype(settings.dtype),
                        enabled=settings.dtype != "fp32",
                    ),
                ):
                    out = _forward(forward, batch, device, table, normalise_output)
            tic = spent("forward_queue", tic)
            writer.put(b, indices, errors, valid, out)
            tic = spent("writer_wait", tic)
    return skipped


def _forward(forward, batch, device, table, normalise_output: bool = True):
    """L2-normalised descriptors [B, D] of a batch: a [B, 3, H, W] tensor, or (native resolution) a
    list of [3, H, W] tensors, forwarded in groups of one size and put back in batch order.
    ``normalise_output`` False: the model's output as it is (local features, normalised per
    position by the model: vprbench.rerank.local.LocalFeatures)."""
    import torch
    import torch.nn.functional as F

    def run(x):
        x = x.to(device, non_blocking=True)
        if x.dtype == torch.uint8:
            x = normalise_batch(x, table)
        out = forward(x).float()
        return F.normalize(out, dim=1) if normalise_output else out

    if not isinstance(batch, list):
        return run(batch)
    groups: dict[tuple, list[int]] = {}
    for i, image in enumerate(batch):
        groups.setdefault(tuple(image.shape), []).append(i)
    out = None
    for rows in groups.values():
        stacked = torch.stack([batch[i] for i in rows]).contiguous(
            memory_format=torch.channels_last
        )
        desc = run(stacked)
        if out is None:
            out = desc.new_empty((len(batch), desc.shape[1]))
        out[torch.tensor(rows, device=desc.device)] = desc
    return out
