"""Batched extraction of global descriptors into the HDF5 cache (resumable, one key per setting).

A request (what the user asked for: model, weights file, options, settings, dataset and the identity
of its images) is mapped to its cache key the first time; later the same request finds its
descriptors without building the model or reading its weights, and without importing torch
(``requests/<digest>.json`` in the cache, checked against the weights files' size and mtime).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vprbench import __version__, allocator
from vprbench.atomic import write_text
from vprbench.cache import (
    FORMAT_VERSION,
    SPLITS,
    Assembly,
    CachedDescriptors,
    DescriptorCache,
    key_digest,
)
from vprbench.choices import (
    BAD_IMAGE_POLICIES,
    BATCH_ORDERS,
    DECODES,
    DTYPE_NAMES,
    LOADERS,
    NORMALISATIONS,
    RESIZE_STAGES,
)
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
from vprbench.paths import file_identity

SHUFFLE_SEED = 0  # BATCH_ORDERS "shuffled": the seed of each split's permutation
COMPILE_TOLERANCE = (
    1e-5  # max |compiled - eager| of L2-normalised descriptors allowed outside the key
)
# Fault injection for the resume tests: seconds to sleep after each written batch.
_SLEEP_ENV = "VPRBENCH_FAULT_SLEEP_PER_BATCH"

ProgressFactory = Callable[[str, int], Callable[[int], None]]


@dataclass
class ExtractSettings:
    """Everything about an extraction that a user chooses."""

    model: str
    weights: str | None = None
    overrides: dict[str, Any] | None = None
    # (H, W); "native": no resize (images at their own size); None: the model card's
    image_size: tuple[int, int] | str | None = None
    resize: str | None = None  # RESIZE_STAGES: where the resize happens; None: the card's
    antialias: bool | None = None  # of a tensor resize; None: the card's
    # None: the official size of (model convention, protocol) for batch-dependent models, else 32
    batch_size: int | None = None
    dtype: str = "fp32"
    device: str = "cpu"
    on_bad_image: str = "error"
    workers: int | None = None  # image loader threads or processes; None: default_workers(device)
    # LOADERS: what the workers are (the same pixels either way); None: default_loader(device, ...)
    loader: str | None = None
    interpolation: str | None = None  # None: the model card's
    normalisation: str | None = None  # a NORMALISATIONS name; None: the model card's mean and std
    batch_order: str = "official"  # BATCH_ORDERS; matters only for batch-dependent models
    # DECODES: "pil" (the loader workers decode and resize) or "device" (torchvision decodes and
    # resizes on the extraction device: nvJPEG on CUDA). Pixels differ slightly: in the cache key.
    decode: str = "pil"
    # torch.compile the forward pass; not in the cache key: descriptors match eager ones within
    # COMPILE_TOLERANCE (benchmarks/compile.py measures both the speed and the difference)
    compile: bool = False


@dataclass
class ModelSummary:
    """What a run record says of the model: enough without building it (a warm cache hit)."""

    name: str
    options: dict[str, Any]
    batch_dependent: bool
    weights_info: dict[str, Any]  # source, sha256, random_init, kind
    descriptor_dim: int

    @classmethod
    def of(cls, model) -> ModelSummary:
        return cls(model.card.name, model.options, bool(model.batch_dependent),
                   model.weights_info.as_dict(), int(model.descriptor_dim))  # fmt: skip


@dataclass
class ExtractResult:
    """The cache entry and what produced it."""

    descriptors: CachedDescriptors
    model: ModelSummary
    preprocess: Preprocess
    batch_size: int
    computed: bool  # False when everything came from the cache
    seconds: float
    skipped: dict[str, list[str]]
    batch_size_source: str = ""  # where batch_size comes from: --batch-size, a protocol, a default
    batch_order: str = ""  # which images shared a batch (batch-dependent models), else ""
    module: Any = None  # the built model (a VPRModel), None when served from a request record
    # Where a computed extraction's wall time went, in seconds (see STAGES); empty when cached.
    timings: dict[str, float] = dataclasses.field(default_factory=dict)
    # The card's official pipeline next to this run: {"dtype", "preprocess", "differences"}
    # (vprbench.official); empty for a result read from an older request record
    official: dict[str, Any] = dataclasses.field(default_factory=dict)


# The stages of a computed extraction that ExtractResult.timings measures (wall time). The main
# thread's stages add up to (nearly) the whole; the writer thread's overlap them (WRITER_STAGES).
STAGES = {
    "fingerprint": "stat every image file for the cache key",
    "loader_wait": "waiting for the loader threads' next batch",
    "decode_on_device": "--decode device: decoding and resizing on the device",
    "forward_queue": "copying a batch to the device and queuing its forward pass",
    "writer_wait": "waiting for the writer thread to take a batch's descriptors (it is behind)",
    "device_wait": "writer thread: waiting for the descriptors (on CUDA: the forward pass running)",
    "shard_write": "writer thread: writing each batch's shard (fsync'd) and its rows of the .h5",
    "finalise": "completing the final .h5 (batches of an earlier run or other ranks), sync, rename",
}
WRITER_STAGES = ("device_wait", "shard_write")
# Batches whose descriptors may wait for the writer thread (vprbench.loader.InOrderCalls)
WRITE_DEPTH = 2


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask, else the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def default_workers(device) -> int:
    """Image loader workers, threads or processes (vprbench.loader), when the user names none, from
    this process's share of the CPUs (under torchrun, the CPUs over the processes on this node,
    LOCAL_WORLD_SIZE). On a GPU the model waits for decoding: one per CPU but one (kept for the main
    thread), up to 16. On the CPU the loader and the model share the cores: with 2 or fewer, a
    loader thread takes a core from the forward pass (benchmarks/extract_pipeline.py on 2 cores, end
    to end / model-only with 0 and 1 thread: d2vpr 0.96 and 0.84, effnet-lite0 0.74 and 0.77); with
    more, one per 8 CPUs overlaps decoding with the forward."""
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    cpus = max(1, available_cpus() // max(1, local))
    if str(getattr(device, "type", device)).startswith("cuda"):
        return max(1, min(16, cpus - 1))
    return 0 if cpus <= 2 else max(1, cpus // 8)


def process_group(device: str) -> tuple[int, int]:
    """(rank, world size): under torchrun (WORLD_SIZE > 1) the torch.distributed group, initialised
    on first use (gloo on CPU, nccl on CUDA); else (0, 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        if str(device).startswith("cuda"):
            import torch

            # NCCL's object collectives stage on the current device: this process's own GPU
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0") or 0))
        dist.init_process_group("nccl" if str(device).startswith("cuda") else "gloo")
    return dist.get_rank(), dist.get_world_size()


def _barrier() -> None:
    import torch.distributed as dist

    dist.barrier()


def _gather_skipped(skipped: dict[str, list[str]], world: int) -> dict[str, list[str]]:
    """Every rank's skipped images, merged (the same on every rank)."""
    import torch.distributed as dist

    parts: list = [None] * world
    dist.all_gather_object(parts, skipped)
    return {split: sorted({p for part in parts for p in part[split]}) for split in SPLITS}


def _compiled(model):
    """``torch.compile`` of ``model`` (dynamic batch size), made once per model object."""
    import torch

    if "_vprbench_compiled" not in model.__dict__:  # not a submodule: no state-dict keys, no cycle
        model.__dict__["_vprbench_compiled"] = torch.compile(model, dynamic=True)
    return model.__dict__["_vprbench_compiled"]


def _device_type(device: str) -> str:
    return device.split(":")[0]


def _autocast_dtype(name: str):
    import torch

    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[name]


def _validate(settings: ExtractSettings) -> None:
    if settings.dtype not in DTYPE_NAMES:
        raise VPRBenchError(f"--dtype must be one of {list(DTYPE_NAMES)}, got {settings.dtype!r}")
    if settings.on_bad_image not in BAD_IMAGE_POLICIES:
        raise VPRBenchError(f"--on-bad-image must be one of {list(BAD_IMAGE_POLICIES)}")
    for value, allowed, flag in (
        (settings.interpolation, INTERPOLATIONS, "--interpolation"),
        (settings.normalisation, NORMALISATIONS, "--normalisation"),
        (settings.batch_order, BATCH_ORDERS, "--batch-order"),
        (settings.decode, DECODES, "--decode"),
        (settings.loader, LOADERS, "--loader"),
    ):
        if value is not None and value not in allowed:
            raise VPRBenchError(f"{flag} must be one of {list(allowed)}, got {value!r}")
    if settings.workers is not None and settings.workers < 0:
        raise VPRBenchError(f"--workers must be >= 0, got {settings.workers}")
    if settings.loader == "processes" and settings.workers == 0:
        raise VPRBenchError(
            "--loader processes needs --workers 1 or more (0 decodes in this thread)"
        )
    if settings.loader == "processes" and settings.decode == "device":
        raise VPRBenchError(
            "--loader processes decodes with PIL; --decode device decodes on the device instead"
        )
    if settings.batch_size is not None and settings.batch_size < 1:
        raise VPRBenchError(f"--batch-size must be >= 1, got {settings.batch_size}")
    if settings.image_size not in (None, "native") and (
        isinstance(settings.image_size, str) or min(settings.image_size) < 1
    ):
        raise VPRBenchError(
            f"--image-size must be two positive integers or 'native', got {settings.image_size!r}"
        )
    if settings.resize is not None and settings.resize not in RESIZE_STAGES:
        raise VPRBenchError(
            f"--resize must be one of {list(RESIZE_STAGES)}, got {settings.resize!r}"
        )
    if settings.dtype == "fp16" and not settings.device.startswith("cuda"):
        raise VPRBenchError(
            "--dtype fp16 is autocast on CUDA (as the official fp16 evaluations ran); on the CPU "
            "use fp32 or bf16"
        )
    if settings.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise VPRBenchError("--device cuda requested, but CUDA is not available here")
    if settings.dtype == "bf16" and settings.device == "cpu" and not cpu_has_native_bf16():
        warnings.warn(
            "bf16 on this CPU has no native instructions and is emulated: expect it to be much "
            "slower than fp32 (benchmarks/extract_dtype.py measures it)",
            stacklevel=3,
        )


def cpu_has_native_bf16() -> bool:
    """Whether oneDNN reports native bf16 support (AVX-512 BF16 or AMX) on this CPU."""
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def request_key(dataset: FormattedDataset, settings: ExtractSettings, images: str) -> dict:
    """Everything a user's request depends on, in files and settings, without building the model:
    the same request gives the same cache key (the model code is pinned by the version)."""
    from vprbench.protocols import default_registry_path

    weights = settings.weights
    if weights is not None and Path(str(weights)).expanduser().is_file():
        weights = file_identity(Path(str(weights)).expanduser())
    request = {
        f.name: getattr(settings, f.name)
        for f in dataclasses.fields(settings)
        if f.name not in ("device", "workers", "loader", "compile")  # none changes a descriptor
    }
    if settings.decode != "pil":  # then the device's decoder and resize make the pixels
        request["device"] = _device_type(settings.device)
    request |= {
        "vprbench": __version__,
        "weights": weights,
        "image_size": _size_entry(settings.image_size),
        "overrides": settings.overrides or {},
        "dataset": dataset.name,
        "images": images,
        "dataset_files": [
            file_identity(dataset.folder / n) for n in ("manifest.json", "batch_order.npz")
        ],
        "registry": file_identity(default_registry_path()),
    }
    return json.loads(json.dumps(request, default=str))


def _size_entry(size) -> list | str | None:
    return list(size) if size not in (None, "native") else size


def _request_path(cache_dir: Path, request: dict) -> Path:
    return Path(cache_dir) / "requests" / f"{key_digest(request)}.json"


def _from_request(request: dict, cache_dir: Path) -> ExtractResult | None:
    """The result of an earlier identical request, if its weights files and descriptors are
    unchanged; else None (the model is built and the key computed as usual)."""
    path = _request_path(cache_dir, request)
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if saved.get("request") != request:
        return None
    if any(file_identity(f[0]) != f for f in saved["weights_files"]):
        return None  # a weights file was replaced or touched: hash it again
    cached = DescriptorCache(cache_dir).load(saved["key"])
    if cached is None:
        return None
    return ExtractResult(cached, ModelSummary(**saved["model"]),
        Preprocess.from_dict(saved["preprocess"]), saved["batch_size"], False, 0.0, {}, saved["batch_size_source"], saved["batch_order"], official=saved.get("official", {}))  # fmt: skip


def _save_request(cache_dir: Path, request: dict, result: ExtractResult, files: list) -> None:
    record = {
        "request": request,
        "key": result.descriptors.key,
        "weights_files": files,
        "model": dataclasses.asdict(result.model),
        "preprocess": result.preprocess.as_dict(),
        "batch_size": result.batch_size,
        "batch_size_source": result.batch_size_source,
        "batch_order": result.batch_order,
        "official": result.official,
    }
    path = _request_path(cache_dir, request)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, json.dumps(record, indent=1) + "\n")


def image_fingerprint(dataset: FormattedDataset) -> str:
    """sha256 over the resolved image root and every image's path, size and modification time: a
    re-formatted or re-downloaded copy under the same dataset name is a different key."""
    h = hashlib.sha256(str(Path(dataset.image_root).resolve()).encode())
    for split in SPLITS:
        h.update(f"\n{split}".encode())
        for rel in dataset.split(split):
            try:
                st = os.stat(dataset.image_path(rel))
                h.update(f"\n{rel}\t{st.st_size}\t{st.st_mtime_ns}".encode())
            except OSError:
                h.update(f"\n{rel}\tmissing".encode())
    return h.hexdigest()


def split_order(dataset: FormattedDataset, split: str, batch_order: str = "official") -> np.ndarray:
    """Dataset indices of ``split`` in the order a batch-dependent model batches them: the
    protocol's official order, or a shuffle seeded by SHUFFLE_SEED and the split."""
    if batch_order == "shuffled":
        rng = np.random.default_rng([SHUFFLE_SEED, SPLITS.index(split)])
        return rng.permutation(len(dataset.split(split))).astype(np.int64)
    return dataset.batch_order(split)


def batch_order_digest(dataset: FormattedDataset, batch_order: str = "official") -> str:
    """Digest of the batch order of both splits (which images share a batch)."""
    h = hashlib.sha256()
    for split in SPLITS:
        h.update(split_order(dataset, split, batch_order).tobytes())
    return h.hexdigest()[:20]


def resolve_preprocess(card, settings: ExtractSettings) -> Preprocess:
    """The model card's official preprocessing (size or native resolution, interpolation, resize
    stage and antialias, normalisation) with what the user chose instead."""
    from vprbench.datasets.resize import check_stage

    mean, std = (
        NORMALISATIONS[settings.normalisation] if settings.normalisation else (card.mean, card.std)
    )
    if settings.image_size == "native":
        size = None
    elif settings.image_size is not None:
        size = tuple(settings.image_size)
    else:
        size = None if card.native_resolution else tuple(card.image_size)
    resize = settings.resize or card.resize
    if settings.antialias is not None:
        antialias = settings.antialias
    else:  # PIL always antialiases; a stage chosen instead of the card's keeps the card's setting
        antialias = True if resize == "pil" else card.antialias
    check_stage(resize, settings.interpolation or card.interpolation, antialias)
    return Preprocess(
        image_size=size,
        interpolation=settings.interpolation or card.interpolation,
        mean=tuple(mean),
        std=tuple(std),
        resize=resize,
        antialias=bool(antialias),
    )


def cache_key(
    model,
    dataset: FormattedDataset,
    preprocess: Preprocess,
    settings,
    batch_size: int,
    images: str | None = None,
) -> dict:
    """The cache key: every input that changes a descriptor (the images themselves included), and
    nothing else (not the positives). ``images``: the dataset's image fingerprint, if computed."""
    info = model.weights_info
    return {
        "format": FORMAT_VERSION,
        "model": model.card.name,
        "options": model.options,
        "weights_sha256": info.sha256,
        "random_init": info.random_init,
        "preprocess": preprocess.key(),
        "dtype": settings.dtype,
        "batch_size": batch_size if model.batch_dependent else None,
        "batch_order": batch_order_digest(dataset, settings.batch_order)
        if model.batch_dependent
        else None,
        "dataset": dataset.name,
        "images": images or image_fingerprint(dataset),
        "on_bad_image": settings.on_bad_image,
    } | (
        # PIL decoding (the default) adds no entry, so earlier caches stay valid.
        {"decode": f"torchvision on {_device_type(settings.device)}"}
        if settings.decode != "pil"
        else {}
    )


def resolve_batch_size(
    settings: ExtractSettings, dataset: FormattedDataset, model, registry=None
) -> tuple[int, str]:
    """(batch size, where it comes from): the user's; else, for batch-dependent models, the official
    size of the model's convention on the dataset's protocol (datasets.yaml inference_batch_size);
    else 32, which does not change descriptors."""
    if settings.batch_size is not None:
        return settings.batch_size, "--batch-size"
    if not model.batch_dependent:
        return 32, "vprbench default (descriptors do not depend on it)"
    from vprbench.protocols import BATCH_CONVENTIONS, load_registry

    convention = model.card.batch_convention
    if convention is None:
        raise VPRBenchError(
            f"model '{model.card.name}' is batch-dependent but its card names no batch-size "
            "convention; pass --batch-size"
        )
    protocol = (registry or load_registry()).get(dataset.manifest.get("protocol") or "")
    if protocol is None:
        return BATCH_CONVENTIONS[convention], (
            f"{convention} default (dataset '{dataset.name}' is not a registered protocol)"
        )
    return protocol.official_batch_size(convention)


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
    _validate(settings)
    if settings.device == "cuda" and int(os.environ.get("WORLD_SIZE", "1") or 1) > 1:
        # torchrun: one GPU per process
        settings = dataclasses.replace(settings, device=f"cuda:{os.environ.get('LOCAL_RANK', 0)}")
    start = time.perf_counter()
    images = image_fingerprint(dataset)
    timings = dict.fromkeys(STAGES, 0.0)
    timings["fingerprint"] = time.perf_counter() - start
    request = None
    files: list = []
    if model is None:
        request = request_key(dataset, settings, images)
        warm = _from_request(request, cache_dir)
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
    key = cache_key(model, dataset, preprocess, settings, batch_size, images)

    from vprbench.official import differences, official_preprocess

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
            _save_request(cache_dir, request, out, files)
        return out

    cached = cache.load(key)
    if cached is not None:
        return result(cached, batch_size, False, 0.0, {})
    # Under torchrun the group shares the work: rank r computes batches r, r + N, ... (the same
    # batches, in the same composition, as one process would), each writing its own shards into the
    # one partial folder; rank 0 holds the key's lock and assembles the final file.
    rank, world = process_group(settings.device)
    sync = _barrier if world > 1 else (lambda: None)
    with cache.lock(key) if rank == 0 else contextlib.nullcontext():
        sync()
        cached = cache.load(key)  # another process may have finished it while we waited
        if cached is not None:
            return result(cached, batch_size, False, 0.0, {})
        if rank == 0:
            folder, shard_batch = cache.open_partial(key, batch_size)
        sync()
        if rank != 0:  # rank 0 made (or kept) the folder; the others read its batch size
            folder, shard_batch = cache.open_partial(key, batch_size)
        allocator.reuse_freed_memory()  # freed activations reused, not faulted in again
        counts = {split: len(dataset.split(split)) for split in SPLITS}
        # rank 0 fills the final file as its batches are written; the rest comes from the shards
        assembly = Assembly(cache, key, folder, counts) if rank == 0 else None
        try:
            skipped = {
                split: _extract_split(model, dataset, split, preprocess, settings, folder,
                                      shard_batch, progress if rank == 0 else None, (rank, world),
                                      timings, assembly)
                for split in SPLITS
            }  # fmt: skip
            if world > 1:
                skipped = _gather_skipped(skipped, world)
            if assembly is not None:
                tic = time.perf_counter()
                assembly.finish(shard_batch)
                timings["finalise"] = time.perf_counter() - tic
        finally:
            if assembly is not None:
                assembly.close()
        sync()
    allocator.release_freed_memory()
    cached = cache.load(key)
    assert cached is not None
    out = result(cached, shard_batch, True, time.perf_counter() - start, skipped)
    out.timings = timings
    return out


def resolve_loader(settings: ExtractSettings, device, native: bool = False) -> tuple[str, int]:
    """(loader, workers) for ``settings`` on ``device``: what the user named, else processes on
    CUDA with PIL decoding and threads elsewhere (``default_loader``), and ``default_workers``;
    processes, when named, at least one. ``native``: images at their own sizes."""
    workers = default_workers(device) if settings.workers is None else settings.workers
    if native and settings.loader == "processes":
        raise VPRBenchError(
            "--loader processes decodes into batches of one image size; native resolution "
            "needs --loader threads"
        )
    loader = settings.loader or default_loader(device, settings.decode, workers, native)
    if settings.loader == "processes":  # asked for by name: at least one, even on 2 CPUs
        workers = max(1, workers)
    return loader, workers


def default_loader(device, decode: str, workers: int, native: bool = False) -> str:
    """Loader processes on CUDA (with PIL decoding and workers), else threads. The main thread
    queues every operation of the forward pass there and needs the GIL between any two;
    ``benchmarks/loader_gil.py`` on 2 CPUs (medians of interleaved runs): its time per forward pass
    was 1.03-1.20x as long beside 1 loader thread as beside 1 loader process, 1.63x beside 2, and
    1.81-1.87x beside 4. On the CPU device the forward pass's operations are long and the loaders
    take the same time (extract_pipeline.py). Native resolution (images of many sizes) needs
    threads: the processes' shared ring holds batches of one size."""
    cuda = str(getattr(device, "type", device)).startswith("cuda")
    return "processes" if cuda and decode == "pil" and workers > 0 and not native else "threads"


def _image_batches(settings, device, paths, batches, batch_size, preprocess, normalise: bool):
    """The batches of images of ``paths`` as the loader of ``settings`` (resolve_loader) makes them
    on the host: in pinned memory on CUDA, for copies that do not block. Loader processes get a ring
    of ``batch_size`` rows per batch, so that one pool serves both splits and a resumed run. A
    default of processes that finds too little shared memory warns and uses threads; a named one
    fails."""
    from vprbench.loader import PREFETCH, SharedMemoryTooSmall, ThreadedBatches, decoders

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

    from vprbench.loader import InOrderCalls

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
                    out = _forward(forward, batch, device, table)
            tic = spent("forward_queue", tic)
            writer.put(b, indices, errors, valid, out)
            tic = spent("writer_wait", tic)
    return skipped


def _forward(forward, batch, device, table):
    """L2-normalised descriptors [B, D] of a batch: a [B, 3, H, W] tensor, or (native resolution) a
    list of [3, H, W] tensors, forwarded in groups of one size and put back in batch order."""
    import torch
    import torch.nn.functional as F

    def run(x):
        x = x.to(device, non_blocking=True)
        if x.dtype == torch.uint8:
            x = normalise_batch(x, table)
        return F.normalize(forward(x).float(), dim=1)

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
