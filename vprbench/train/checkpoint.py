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


def rng_state() -> dict:
    """The random states a training step draws from: torch CPU (dropout, RandAugment outside the
    seeded data path), CUDA where present, and Python's."""
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
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
