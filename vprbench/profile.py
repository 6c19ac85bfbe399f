"""Efficiency profiling: parameters, fvcore FLOPs with handlers for every operator the models use,
latency (warm-up excluded, median and spread over repeats, no data loading) and peak memory.

fvcore counts one fused multiply-add as one "flop"; vprbench reports that number as MACs and doubles it
for FLOPs, and lists the operators it did not count (element-wise arithmetic, by fvcore's convention).
"""

from __future__ import annotations

import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import time
import warnings
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

with warnings.catch_warnings():  # fvcore's import touches the deprecated torch.jit.script
    warnings.simplefilter("ignore", FutureWarning)
    from fvcore.nn import FlopCountAnalysis
    from fvcore.nn.jit_handles import elementwise_flop_counter, get_shape

from vprbench import __version__, allocator
from vprbench.atomic import write_text
from vprbench.cache import key_digest
from vprbench.errors import VPRBenchError
from vprbench.models.registry import create_model, get_card, resolve_options

_ADAPTER = re.compile(r"^backbone\.blocks\.\d+\.adapter[12]?$")  # CricaVPR's; SelaVPR's two


def sdpa_flop_jit(inputs: list[Any], outputs: list[Any]) -> int:
    """scaled_dot_product_attention(q [.., Nq, d], k [.., Nk, d], v [.., Nk, dv]): the two matrix
    products, Nq*Nk*d + Nq*Nk*dv multiply-adds per batch and head (softmax not counted)."""
    q, k, v = (get_shape(x) for x in inputs[:3])
    batch = int(np.prod(q[:-2]))
    return batch * q[-2] * k[-2] * (q[-1] + v[-1])


def native_mha_flop_jit(inputs: list[Any], outputs: list[Any]) -> int:
    """torch's fused multi-head attention (nn.MultiheadAttention's inference fast path; query, key
    and value [B, N, E]): the q, k and v projections, the two attention products summed over heads,
    and the output projection, as the unfused path counts them."""
    b, nq, e = get_shape(inputs[0])
    nk = get_shape(inputs[1])[1]
    return b * (2 * nq * e * e + 2 * nk * e * e + 2 * nq * nk * e)


EXTRA_HANDLES = {
    "aten::scaled_dot_product_attention": sdpa_flop_jit,
    "aten::_native_multi_head_attention": native_mha_flop_jit,
    "aten::upsample_bicubic2d": elementwise_flop_counter(0, 16),  # 4x4 taps per output value
    "aten::avg_pool2d": elementwise_flop_counter(1, 0),  # one add per input value
}


@dataclass
class FlopReport:
    """MACs per image (fvcore 'flops'), per module group, and the operators left uncounted."""

    macs_per_image: float
    by_group: dict[str, float]
    not_counted: dict[str, int]


def flop_analysis(model: torch.nn.Module, x: torch.Tensor) -> FlopCountAnalysis:
    analysis = FlopCountAnalysis(model, (x,))
    analysis.set_op_handle(**EXTRA_HANDLES)
    return analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)


def group_totals(per_module: dict[str, float], top_level: list[str]) -> dict[str, float]:
    """Per-module numbers -> top-level children, with the backbone's adapters as their own group."""
    groups = {name: float(per_module.get(name, 0)) for name in top_level}
    adapters = sum(v for k, v in per_module.items() if _ADAPTER.match(k))
    if adapters:
        groups["backbone"] -= adapters
        groups["adapters"] = float(adapters)
    return {k: v for k, v in groups.items() if v}


def count_flops(model: torch.nn.Module, image_size: tuple[int, int], batch: int = 1) -> FlopReport:
    """fvcore MACs of one forward on a [batch, 3, H, W] input, divided by ``batch``."""
    x = torch.rand(batch, 3, *image_size)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        analysis = flop_analysis(model, x)
        total = analysis.total()
        per_module = analysis.by_module()
        unsupported = Counter(analysis.unsupported_ops())
    top = [name for name, _ in model.named_children()]
    groups = {k: v / batch for k, v in group_totals(per_module, top).items()}
    return FlopReport(total / batch, groups, dict(sorted(unsupported.items())))


def _enclosing(name: str) -> list[str]:
    """The modules that hold a dotted parameter (or module) name, outermost first."""
    parts = name.split(".")
    return [".".join(parts[:depth]) for depth in range(1, len(parts))]


def _per_module(counts: dict[str, int]) -> Counter:
    """Counts by dotted name -> the total within each enclosing module."""
    totals: Counter = Counter()
    for name, n in counts.items():
        for module in _enclosing(name):
            totals[module] += n
    return totals


def parameter_groups(model: torch.nn.Module) -> dict[str, int]:
    per_module = _per_module({name: p.numel() for name, p in model.named_parameters()})
    top = [name for name, _ in model.named_children()]
    return {k: int(v) for k, v in group_totals(per_module, top).items()}


def unused_parameters(model: torch.nn.Module, image_size: tuple[int, int]) -> dict[str, int]:
    """Parameters no descriptor depends on, by the module (or parameter) that holds them: those left
    without a gradient after one backward pass of the descriptors' sum (a batch of 2, every
    parameter temporarily trainable). DINOv2's pre-training ``mask_token`` is one; a released
    model's never-run branch (SelaVPR's local ``LocalAdapt``, BoQ's final norm) others."""
    was_training = model.training
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    model.eval()
    try:
        for p in model.parameters():
            p.requires_grad_(True)
            p.grad = None
        with torch.enable_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = model(torch.rand(2, 3, *image_size)).float().sum()
            if out.requires_grad:  # else no parameter reaches the descriptors (or there are none)
                out.backward()
        unused: dict[str, int] = Counter()
        for name, p in model.named_parameters():
            if p.grad is None:
                holder = name.rsplit(".", 1)[0] if name.endswith((".weight", ".bias")) else name
                unused[holder] += p.numel()
    finally:
        for name, p in model.named_parameters():
            p.grad = None
            p.requires_grad_(flags[name])
        model.train(was_training)
    return _collapse(dict(unused), model)


def _collapse(unused: dict[str, int], model: torch.nn.Module) -> dict[str, int]:
    """Report a module once when all of its parameters are unused (``LocalAdapt``, not its parts)."""
    sizes = {name: sum(p.numel() for p in m.parameters()) for name, m in model.named_modules()}
    unused_within = _per_module(unused)
    out: Counter = Counter()
    for name, n in unused.items():
        whole = next((m for m in _enclosing(name) if unused_within[m] == sizes[m]), name)
        out[whole] += n
    return dict(sorted(out.items()))


def measure_latency(
    model: torch.nn.Module, x: torch.Tensor, dtype: str, warmup: int, repeats: int
) -> dict[str, float]:
    """Seconds per forward of batch ``x`` (already in memory: no data loading), ``warmup`` runs
    discarded; median, quartiles, min and max of ``repeats`` timed runs."""
    device = x.device
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times = []
    with (
        torch.inference_mode(),
        torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == "bf16"),
    ):
        for i in range(warmup + repeats):
            sync()
            start = time.perf_counter()
            model(x)
            sync()
            if i >= warmup:
                times.append(time.perf_counter() - start)
    q1, median, q3 = np.percentile(times, [25, 50, 75])
    batch = x.shape[0]
    return {
        "batch_ms_median": 1000 * median,
        "batch_ms_p25": 1000 * q1,
        "batch_ms_p75": 1000 * q3,
        "batch_ms_min": 1000 * min(times),
        "batch_ms_max": 1000 * max(times),
        "image_ms_median": 1000 * median / batch,
        "images_per_second": batch / median,
        "repeats": repeats,
        "warmup": warmup,
        "stdev_ms": 1000 * statistics.pstdev(times),
    }


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_rss_mib() -> float:
    """This process's peak resident memory. Linux's VmHWM belongs to the address space that exec
    made, whereas getrusage's ru_maxrss survives exec: a child started by a large parent (the
    profile command, holding its own model) would report the parent's size instead of its own."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def memory_worker(spec: dict) -> dict:
    """Run in a fresh process: peak resident memory of one inference forward (CPU), or peak CUDA
    memory allocated. Weights do not change memory, so the model runs at random init."""
    torch.set_num_threads(spec["threads"])
    allocator.reuse_freed_memory()  # as the extraction it stands for
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = create_model(spec["model"], **spec["options"]).eval().to(spec["device"])
    x = torch.rand(spec["batch"], 3, *spec["image_size"], device=spec["device"])
    before = _rss_mib()
    if spec["device"].startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    with (
        torch.inference_mode(),
        torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=spec["dtype"] == "bf16"),
    ):
        model(x)
    if spec["device"].startswith("cuda"):
        return {
            "kind": "cuda max_memory_allocated",
            "peak_mib": torch.cuda.max_memory_allocated() / 2**20,
        }
    peak = _peak_rss_mib()
    return {"kind": "process peak RSS", "peak_mib": peak, "forward_increase_mib": peak - before}


def measure_memory(spec: dict) -> dict:
    """:func:`memory_worker` in a child process, so earlier models do not mask the peak."""
    proc = subprocess.run(
        [sys.executable, "-m", "vprbench.profile", json.dumps(spec)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise VPRBenchError(
            f"memory measurement of '{spec['model']}' failed: {proc.stderr.strip()[-300:]}"
        )
    return json.loads(proc.stdout.strip().splitlines()[-1])


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


def machine() -> dict:
    cpu = platform.processor()
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu = names[0] if names else cpu
    return {
        "host": platform.node(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "malloc": allocator.describe(),  # it changes CPU latency (vprbench.allocator)
    }


def tdda_offset_passes(model) -> str | None:
    """How many times the counted TDDA runs its offset generator per image, and how that differs from
    the official code; None for models without TDDA. A FLOPs reduction cited from these numbers is of
    vprbench's once-per-image TDDA (same outputs), not of the released model's 13 passes."""
    from vprbench.models.aggregators import REGIONS, TDDA

    tdda = next((m for m in model.modules() if isinstance(m, TDDA)), None)
    if tdda is None:
        return None
    if tdda.recompute_offsets_per_region:
        return f"{len(REGIONS)} per image, once per region, as the official D2VPR.py"
    return (
        f"1 per image (vprbench computes the region-independent offset map once; the official "
        f"D2VPR.py runs it once per region, {len(REGIONS)} times, with identical outputs)"
    )


PROFILE_FORMAT = 2  # 2: records hold the parameters no descriptor uses


def profile_key(name: str, options: dict, s: ProfileSettings, image_size) -> dict:
    return {
        "format": PROFILE_FORMAT,
        "model": name,
        "options": options,
        "image_size": list(image_size),
        **{k: v for k, v in asdict(s).items() if k != "image_size"},
        "machine": machine(),
        "vprbench": __version__,
    }


def profile_model(name: str, overrides: dict, s: ProfileSettings, results_dir: Path, force=False):
    """Profile one model (or read the cached profile of the same key). Returns the record."""
    allocator.reuse_freed_memory()  # measure as extraction runs
    card = get_card(name)
    options = resolve_options(card, overrides)
    image_size = tuple(s.image_size or card.image_size)
    threads = s.threads or torch.get_num_threads()
    s = ProfileSettings(**{**asdict(s), "threads": threads})
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
    latency = measure_latency(model.to(s.device), x, s.dtype, s.warmup, s.repeats)
    memory = measure_memory({"model": name, "options": options, "image_size": list(image_size),
                             "batch": s.batch_size, "dtype": s.dtype, "device": s.device,
                             "threads": threads})  # fmt: skip
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
        "memory": memory,
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


if __name__ == "__main__":
    print(json.dumps(memory_worker(json.loads(sys.argv[1]))))
