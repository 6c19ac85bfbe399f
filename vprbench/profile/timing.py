"""Timing a model and its memory: latency (warm-up excluded, median and spread over repeats, no data
loading), peak memory of one forward in a fresh process, and the machine a measurement ran on.

Run as ``python -m vprbench.profile.timing SPEC`` it is that fresh process (``measure_memory``).
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
import warnings

import numpy as np
import torch

with warnings.catch_warnings():  # fvcore's import touches the deprecated torch.jit.script
    warnings.simplefilter("ignore", FutureWarning)

from vprbench import allocator
from vprbench.errors import VPRBenchError
from vprbench.models.registry import create_model


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
        [sys.executable, "-m", "vprbench.profile.timing", json.dumps(spec)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise VPRBenchError(
            f"memory measurement of '{spec['model']}' failed: {proc.stderr.strip()[-300:]}"
        )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def load_average() -> float | None:
    """The 1-minute load average (runnable processes), or None where the OS has none."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def free_cores() -> tuple[int, str]:
    """CPU threads to time with when none is asked for: the cores this process may use less the
    ones the load average says are busy, at least 1; and why, in words. On a shared machine the
    default of torch (one thread per core) competes with the other processes, and its latency
    measures that competition (a 2-core machine under load gave 4,500 ms for a model that takes
    129 ms on one free core)."""
    from vprbench.extract.settings import available_cpus

    cores, load = available_cpus(), load_average()
    if load is None:
        return cores, f"{cores} cores (no load average on this OS)"
    free = max(1, min(cores, int(cores - load + 0.5)))
    return free, f"{free} of {cores} cores free (1-minute load average {load:.2f})"


def timing_warnings(latency: dict, threads: int, load: float | None, cores: int) -> list[str]:
    """What makes a latency untrustworthy: a machine busy beside the measurement, or a wide spread
    between the repeats."""
    out = []
    if load is not None and load + threads > cores + 0.5:
        out.append(
            f"the machine was busy: load average {load:.2f} on {cores} cores with {threads} "
            "thread(s) timed, so latency includes waiting for the CPU; rerun when it is idle, or "
            "with fewer --threads"
        )
    median = latency["batch_ms_median"]
    spread = (latency["batch_ms_p75"] - latency["batch_ms_p25"]) / median if median else 0.0
    if spread > 0.25 or latency["batch_ms_max"] > 2 * latency["batch_ms_min"]:
        out.append(
            f"wide spread: p25-p75 {latency['batch_ms_p25']:.1f}-{latency['batch_ms_p75']:.1f} ms "
            f"around a median of {median:.1f} ms, min {latency['batch_ms_min']:.1f}, max "
            f"{latency['batch_ms_max']:.1f}: more --repeats, or an idle machine"
        )
    return out


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


if __name__ == "__main__":
    print(json.dumps(memory_worker(json.loads(sys.argv[1]))))
