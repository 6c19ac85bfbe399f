"""Training: the two D²-VPR stages (distillation, fine-tuning) on GSV-Cities, resumable, torchrun-ready.

from vprbench.train import config_from, train
train(config_from("finetune", model="effnet-lite0-gem", data="nordland-train-sample", out="runs/x"))

``train`` and the configuration are imported when first asked for, so that reading the training
sets' definitions (``vprbench.train.gsv``) does not import torch.
"""

from __future__ import annotations

import importlib

__all__ = ["TrainConfig", "config_from", "train"]
_HOME = {"TrainConfig": "vprbench.train.config", "config_from": "vprbench.train.config",
         "train": "vprbench.train.loop"}  # fmt: skip


def __getattr__(name: str):
    if name in _HOME:
        return getattr(importlib.import_module(_HOME[name]), name)
    raise AttributeError(f"module 'vprbench.train' has no attribute {name!r}")
