"""What differs between the two training stages: the models, what is trained, the loss.

Stage 1, distillation (tony19980810/D2VPR distillation.py): a frozen teacher (CricaVPR, eval mode, its
cross-image encoder over the batch) gives final L2-normalised descriptors; the student, every parameter
trainable, is trained to match them with MSE (``cosine``: 1 - cosine similarity, an option).

Stage 2, fine-tuning (D2VPR finetune.py, finetune_script.py): MultiSimilarity loss (alpha 1, beta 50,
base 0) with the MultiSimilarity miner (epsilon 0.1), both from pytorch-metric-learning; D²-VPR trains
its last 4 ViT-S blocks (with their adapters), the DRM, the aggregator and the encoder if present. Other
models train what their constructor leaves trainable (CricaVPR: adapters, aggregator, encoder, as its
official train.py; the baselines: everything).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vprbench.errors import VPRBenchError

DISTILL_LOSSES = ("mse", "cosine")
# finetune_script.py:33-39 unfreezes these (a substring test on parameter names); vprbench's names.
D2VPR_FINETUNED = ("backbone.blocks.8.", "backbone.blocks.9.", "backbone.blocks.10.",
                   "backbone.blocks.11.", "drm.", "aggregator.", "encoder.")  # fmt: skip


def select_trainable(model: nn.Module, stage: str) -> tuple[int, int]:
    """Set requires_grad for ``stage``; returns (trainable, total) parameter counts."""
    from vprbench.models.d2vpr import D2VPR

    if stage == "distill":
        for p in model.parameters():
            p.requires_grad_(True)
    elif isinstance(model, D2VPR):
        for name, p in model.named_parameters():
            p.requires_grad_(name.startswith(D2VPR_FINETUNED))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if trainable == 0:
        raise VPRBenchError(f"model '{model.card.name}' has no trainable parameters")
    return trainable, sum(p.numel() for p in model.parameters())


def build_model(name: str, weights: str | None, options: dict, cache_dir, what: str):
    """A registered model with its weights; a random init is allowed and said loudly by the caller."""
    from vprbench.models import create_model
    from vprbench.models.common import RandomInitWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomInitWarning)
        model = create_model(name, weights=weights, cache_dir=cache_dir, **options)
    if not any(True for _ in model.parameters()):
        raise VPRBenchError(f"{what} '{name}' has no parameters to train")
    return model


@dataclass
class DistillLoss:
    """MSE (or 1 - cosine) between the student's and the frozen teacher's final descriptors."""

    teacher: nn.Module
    kind: str = "mse"

    def __call__(self, student: nn.Module, images: torch.Tensor, labels: torch.Tensor):
        with torch.no_grad():
            target = self.teacher(images).float()
        out = student(images).float()
        if self.kind == "mse":
            return F.mse_loss(out, target)
        return (1 - F.cosine_similarity(out, target, dim=1)).mean()


class MultiSimilarity:
    """pytorch-metric-learning's MultiSimilarityLoss(1, 50, 0) on the pairs its
    MultiSimilarityMiner(0.1) mines; across processes, on the gathered global batch."""

    def __init__(self, distributed: bool) -> None:
        from pytorch_metric_learning import losses, miners

        loss = losses.MultiSimilarityLoss(alpha=1.0, beta=50.0, base=0.0)
        miner = miners.MultiSimilarityMiner(epsilon=0.1)
        if distributed:
            from pytorch_metric_learning.utils import distributed as pml_dist

            loss, miner = (
                pml_dist.DistributedLossWrapper(loss),
                pml_dist.DistributedMinerWrapper(miner),
            )
        self.loss, self.miner = loss, miner
        self.scale = torch.distributed.get_world_size() if distributed else 1

    def __call__(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor):
        out = model(images).float()
        pairs = self.miner(out, labels)
        # The wrapper returns world_size x the global loss, so that DDP's gradient mean is the
        # global gradient; ``logged`` divides that back for the record.
        return self.loss(out, labels, pairs)

    def logged(self, loss: torch.Tensor) -> float:
        return float(loss.detach()) / self.scale
