"""Training checkpoints: one dict holding everything a resumed run needs, written atomically.

    {"vprbench": {"model", "options", "stage", "step", "epoch", "batch", "random_teacher", ...},
     "model_state_dict", "optimizer_state_dict", "scaler_state_dict", "rng", "best", "config"}

``model_state_dict`` is where vprbench's weight reader looks first, so ``vprbench extract --model M
--weights DIR/best.pth`` loads a trained model directly; the ``vprbench`` block lets that load refuse a
checkpoint of another model or other options (vprbench/models/registry.py create_model).
"""

from __future__ import annotations

import random
from pathlib import Path

import torch

from vprbench.atomic import atomic_open
from vprbench.errors import VPRBenchError


def rng_state(device: torch.device | None = None) -> dict:
    """The random states a training step draws from in this process: torch CPU (dropout on the CPU,
    RandAugment outside the seeded data path), this process's CUDA device where it trains on one
    (dropout on the GPU), and Python's."""
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if device is not None and device.type == "cuda":
        state["cuda_device"] = torch.cuda.get_rng_state(device)
    return state


def gather_rng_states(device: torch.device, world: int) -> dict:
    """Every process's :func:`rng_state`, for rank 0's checkpoint (a collective under torchrun: every
    rank calls it). One process: its state; several: {"ranks": [state of rank 0, 1, ...]}."""
    local = rng_state(device)
    if world == 1:
        return local
    states: list = [None] * world
    torch.distributed.all_gather_object(states, local)
    return {"ranks": states}


def set_rng_state(state: dict, rank: int = 0, world: int = 1, device=None) -> None:
    """Restore this process's random states: rank ``rank``'s own where the checkpoint holds one per
    process (refusing another number of processes), else the single state. Checkpoints from before
    per-rank states held every CUDA device's state of rank 0 (``cuda``): restored as they were."""
    if "ranks" not in state and world > 1:
        raise VPRBenchError(
            f"the checkpoint holds the random states of 1 process: resume it in one process, not {world}"
        )
    if "ranks" in state:
        if len(state["ranks"]) != world:
            raise VPRBenchError(
                f"the checkpoint holds the random states of {len(state['ranks'])} processes: resume "
                f"with as many (torchrun --nproc_per_node {len(state['ranks'])}), not {world}"
            )
        state = state["ranks"][rank]
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda_device" in state and device is not None and torch.device(device).type == "cuda":
        torch.cuda.set_rng_state(state["cuda_device"], device)
    elif "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: Path, payload: dict) -> None:
    """Write ``payload`` to ``path`` atomically: a killed save never leaves a damaged last.pth."""
    with atomic_open(Path(path), "wb") as f:
        torch.save(payload, f)


def load_checkpoint(path: Path) -> dict:
    """A vprbench training checkpoint (weights_only: tensors, numbers, strings, tuples only)."""
    path = Path(path)
    if not path.is_file():
        raise VPRBenchError(f"{path}: no checkpoint to resume from")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several unrelated types for a bad file
        raise VPRBenchError(f"{path}: not a readable vprbench checkpoint ({exc})") from exc
    if not isinstance(payload, dict) or "vprbench" not in payload:
        raise VPRBenchError(f"{path}: not a vprbench training checkpoint")
    return payload


def weights_payload(model: torch.nn.Module, meta: dict) -> dict:
    """The part of a checkpoint that ``--weights`` needs: the state dict and what model it is."""
    return {"vprbench": meta, "model_state_dict": model.state_dict()}
