"""What an extraction is asked to do and what it returns: the settings a user chooses, their checks,
and the rules that fill in what the user left out (batch size, loader, workers).

Nothing here imports torch at module level: the CLI validates and a warm cache hit answers without it.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from vprbench.choices import (
    BAD_IMAGE_POLICIES,
    BATCH_ORDERS,
    DECODES,
    DTYPE_NAMES,
    LOADERS,
    NORMALISATIONS,
    RESIZE_STAGES,
    STORES,
)
from vprbench.datasets.formatted import FormattedDataset
from vprbench.datasets.images import INTERPOLATIONS, Preprocess
from vprbench.errors import VPRBenchError
from vprbench.extract.cache import CachedDescriptors

SHUFFLE_SEED = 0  # BATCH_ORDERS "shuffled": the seed of each split's permutation
COMPILE_TOLERANCE = (
    1e-5  # max |compiled - eager| of L2-normalised descriptors allowed outside the key
)

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
    # STORES: the precision of the stored descriptors (fp16 halves the disk and memory of a large
    # database; search computes in fp32): in the cache key when not fp32
    store: str = "fp32"
    # a re-ranker's name: extract the model's local features for it instead of its descriptors
    # (vprbench.rerank.local.LocalFeatures; in the key as the options' "features")
    local: str | None = None


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
    # (vprbench.extract.official); empty for a result read from an older request record
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
# Batches whose descriptors may wait for the writer thread (vprbench.extract.loader.InOrderCalls)
WRITE_DEPTH = 2


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask, else the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def default_workers(device) -> int:
    """Image loader workers, threads or processes (vprbench.extract.loader), when the user names none, from
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


def validate(settings: ExtractSettings) -> None:
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
        (settings.store, STORES, "--store"),
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
    from vprbench.datasets.protocols import BATCH_CONVENTIONS, load_registry

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
