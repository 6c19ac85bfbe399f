"""Training: the two D²-VPR stages (distillation, fine-tuning) on GSV-Cities, resumable, torchrun-ready.

from vprbench.train import config_from, train
train(config_from("finetune", model="effnet-lite0-gem", data="nordland-train-sample", out="runs/x"))
"""

from vprbench.train.config import TrainConfig, config_from
from vprbench.train.loop import train

__all__ = ["TrainConfig", "config_from", "train"]
