"""``profile_model``: one model's parameters, FLOPs, latency and memory under one setting, as a
profile record cached by its key (the machine in it), and the reductions of a set against a reference."""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

with warnings.catch_warnings():  # fvcore's import touches the deprecated torch.jit.script
    warnings.simplefilter("ignore", FutureWarning)

from vprbench import __version__, allocator
from vprbench.atomic import write_text
from vprbench.errors import VPRBenchError
from vprbench.extract.cache import key_digest
from vprbench.extract.settings import available_cpus
from vprbench.models.registry import create_model, get_card, resolve_options
from vprbench.profile.flops import (
    count_flops,
    parameter_groups,
    tdda_offset_passes,
    unused_parameters,
)
from vprbench.profile.timing import (
    free_cores,
    load_average,
    machine,
    measure_latency,
    measure_memory,
    timing_warnings,
)


@dataclass
class ProfileSettings:
    image_size: tuple[int, int] | None = None
    batch_size: int = 1
    dtype: str = "fp32"
    device: str = "cpu"
    threads: int | None = None
    warmup: int = 3
    repeats: int = 10
    pca_dim: int | None = None
    rerank: str | None = None  # a re-ranker of this model: its cost too (vprbench.profile.rerank)
    rerank_k: int | None = None  # candidates a query; None: the re-ranker's official top-K
    rerank_repeats: int = 3


RERANK_FIELDS = ("rerank", "rerank_k", "rerank_repeats")
PROFILE_FORMAT = 2  # 2: records hold the parameters no descriptor uses


def profile_key(name: str, options: dict, s: ProfileSettings, image_size) -> dict:
    """The cache key; the re-ranking fields only when a re-ranker is profiled (older keys stay)."""
    skip = {"image_size", *(RERANK_FIELDS if s.rerank is None else ())}
    return {
        "format": PROFILE_FORMAT,
        "model": name,
        "options": options,
        "image_size": list(image_size),
        **{k: v for k, v in asdict(s).items() if k not in skip},
        "machine": machine(),
        "vprbench": __version__,
    }


def profile_model(name: str, overrides: dict, s: ProfileSettings, results_dir: Path, force=False):
    """Profile one model (or read the cached profile of the same key). Returns the record."""
    allocator.reuse_freed_memory()  # measure as extraction runs
    card = get_card(name)
    options = resolve_options(card, overrides)
    image_size = tuple(s.image_size or card.image_size)
    if s.threads:
        threads, threads_source = s.threads, "--threads"
    elif s.device.startswith("cuda"):
        threads, threads_source = torch.get_num_threads(), "torch's default (CUDA device)"
    else:
        threads, threads_source = free_cores()
    reranker = None
    if s.rerank is not None:
        from vprbench.rerank import get_reranker

        reranker = get_reranker(s.rerank)
        if reranker.model != name:  # another model's stage: profile this one without it
            reranker = None
    s = ProfileSettings(**{**asdict(s), "threads": threads,
                           **({} if reranker else dict.fromkeys(RERANK_FIELDS[:2]))})  # fmt: skip
    key = profile_key(name, options, s, image_size)
    path = Path(results_dir) / "profiles" / f"{name}__{key_digest(key)}.json"
    if path.is_file() and not force:
        record = json.loads(path.read_text())
        if record.get("key") == json.loads(json.dumps(key)):
            record["cached"] = True
            record["path"] = str(path)
            return record
    torch.set_num_threads(threads)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(0)
        model = create_model(name, **options).eval()
    params = parameter_groups(model)
    unused = unused_parameters(model, image_size)
    flops = count_flops(model, image_size)
    x = torch.rand(s.batch_size, 3, *image_size, device=s.device)
    load_before = load_average()
    latency = measure_latency(model.to(s.device), x, s.dtype, s.warmup, s.repeats)
    load = {"before": load_before, "after": load_average(), "cores": available_cpus()}
    memory = measure_memory({"model": name, "options": options, "image_size": list(image_size),
                             "batch": s.batch_size, "dtype": s.dtype, "device": s.device,
                             "threads": threads})  # fmt: skip
    rerank = None
    if reranker is not None:
        from vprbench.profile.rerank import profile_rerank

        rerank = profile_rerank(model, reranker, x, s.rerank_k, s)
    macs = flops.macs_per_image
    by_group = dict(flops.by_group)
    if s.pca_dim:
        dim = model.descriptor_dim
        by_group["pca"] = float(dim * s.pca_dim)
        params["pca"] = dim * s.pca_dim + dim  # components and mean
        macs += by_group["pca"]
    record = {
        "key": key,
        "model": name,
        "options": options,
        "image_size": list(image_size),
        "params": {
            "total": sum(p.numel() for p in model.parameters()) + params.get("pca", 0),
            "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "by_group": params,
            # released parameters that no descriptor depends on (the total counts them)
            "unused": sum(unused.values()),
            "unused_by_module": unused,
        },
        "flops": {
            "macs_per_image": macs,
            "gmacs_per_image": macs / 1e9,
            "gflops_per_image": 2 * macs / 1e9,
            "convention": "fvcore counts one multiply-add as one flop (MACs); FLOPs = 2 x MACs",
            "macs_by_group": by_group,
            "not_counted_ops": flops.not_counted,
            "tdda_offset_passes": tdda_offset_passes(model),
        },
        "latency": {**latency, "excludes": "data loading and decoding (input tensor in memory)"},
        "threads": {"used": threads, "source": threads_source},
        "load_average": load,
        "warnings": timing_warnings(latency, threads, load_before, load["cores"])
        if s.device == "cpu"
        else [],
        "memory": memory,
        **({"rerank": rerank} if rerank else {}),
        "settings": {**asdict(s), "image_size": list(image_size)},
        "machine": key["machine"],
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, json.dumps(record, indent=2) + "\n")
    record["cached"] = False
    record["path"] = str(path)
    return record


def reductions(records: list[dict], reference: str) -> list[dict]:
    """Per model: fractional reduction of params, FLOPs and latency against ``reference``."""
    ref = next((r for r in records if r["model"] == reference), None)
    if ref is None:
        raise VPRBenchError(f"--vs {reference}: not among the profiled models")
    out = []
    for r in records:
        row = {"model": r["model"], "reference": reference}
        for label, get in (
            ("params", lambda x: x["params"]["total"]),
            ("flops", lambda x: x["flops"]["macs_per_image"]),
            ("latency", lambda x: x["latency"]["image_ms_median"]),
        ):
            row[label] = 1 - get(r) / get(ref) if get(ref) else None  # a reference of 0: undefined
        out.append(row)
    return out
