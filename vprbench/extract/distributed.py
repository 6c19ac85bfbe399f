"""Extraction under torchrun: the process group, and the sharing of one cache entry's batches
between ranks (rank r computes batches r, r + N, ... into the one partial folder; rank 0 holds the
key's lock and assembles the final file from its own batches as they come and the others' shards).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from pathlib import Path

from vprbench.extract.cache import Assembly, DescriptorCache


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
    return {split: sorted({p for part in parts for p in part[split]}) for split in skipped}


Compute = Callable[[Path, int, tuple[int, int], "Assembly | None"], dict[str, list[str]]]


def compute_shared(
    cache: DescriptorCache,
    key: dict,
    batch_size: int,
    device: str,
    counts: dict[str, int],
    compute: Compute,
    timings: dict[str, float],
) -> tuple[bool, int, dict[str, list[str]]]:
    """Compute the entry ``key`` of ``cache`` with every rank of the group (one process: the group of
    one). ``compute(folder, shard batch size, (rank, world), assembly)`` writes this rank's batches
    of the splits in ``counts`` ({split: rows}, the entry's own) into ``folder`` (and into
    ``assembly`` on rank 0) and returns its skipped images per split.

    Returns (True, its batch size, {}) when the entry's file was complete once this process held the
    lock (another process finished it; every rank decides after the same barrier, while rank 0 holds
    the lock, so all see the same state); else (False, the shard batch size, every rank's skipped
    images). The key may be one split's (a shared database's entry). The batches
    are the same, in the same composition, as one process would make them; the shard batch size is
    the partial folder's (an interrupted run resumes with its own batch size)."""
    rank, world = process_group(device)
    sync = _barrier if world > 1 else (lambda: None)
    with cache.lock(key) if rank == 0 else contextlib.nullcontext():
        sync()
        if cache.has(key):  # another process may have finished it while we waited
            return True, batch_size, {}
        if rank == 0:
            folder, shard_batch = cache.open_partial(key, batch_size)
        sync()
        if rank != 0:  # rank 0 made (or kept) the folder; the others read its batch size
            folder, shard_batch = cache.open_partial(key, batch_size)
        # rank 0 fills the final file as its batches are written; the rest comes from the shards
        assembly = Assembly(cache, key, folder, counts) if rank == 0 else None
        try:
            skipped = compute(folder, shard_batch, (rank, world), assembly)
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
    return None, shard_batch, skipped
