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
    """MSE (or 1 - cosine) between the student's and the frozen teacher's final descriptors.

    ``world`` > 1 (torchrun): the teacher runs on the global batch, every rank's images gathered in
    rank order (the single process's batch), and each rank takes its own rows of the targets, so a
    batch-dependent teacher (CricaVPR's cross-image encoder attends across the batch) gives the
    targets one process would. The released teacher runs on the whole batch, unwrapped
    (D2VPR distillation.py:76,122)."""

    teacher: nn.Module
    kind: str = "mse"
    world: int = 1
    rank: int = 0

    def __call__(self, student: nn.Module, images: torch.Tensor, labels: torch.Tensor):
        with torch.no_grad():
            if self.world > 1 and getattr(self.teacher, "batch_dependent", False):
                parts = [torch.empty_like(images) for _ in range(self.world)]
                torch.distributed.all_gather(parts, images.contiguous())
                n = len(images)
                target = self.teacher(torch.cat(parts))[self.rank * n : (self.rank + 1) * n]
                target = target.float()
            else:
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


class _AllReduceSum(torch.autograd.Function):
    """Sum over the ranks whose gradient is the sum of the ranks' gradients (every rank's loss
    depends on every rank's statistics)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        out = x.clone()
        torch.distributed.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        out = grad.clone()
        torch.distributed.all_reduce(out)
        return out


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are those of the global batch under torchrun: each rank's
    per-channel sums and counts are summed across ranks, differentiably, so the gradient is the
    global batch's too, on any backend (torch's SyncBatchNorm needs CUDA). Statistics in float32
    whatever the autocast dtype (a 65,536-value channel overflows fp16). In eval, or in one process,
    it is BatchNorm2d. Running statistics are updated as BatchNorm2d updates them (momentum, or the
    cumulative average when momentum is None), from the global mean and unbiased variance."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        if (
            not self.training
            or not dist.is_available()
            or not dist.is_initialized()
            or (dist.get_world_size() == 1)
        ):
            return super().forward(x)
        dims = (0, 2, 3)
        shape = (1, -1, 1, 1)
        xf = x.float()
        count = torch.full((x.shape[1],), x.numel() / x.shape[1], dtype=torch.float32,
                           device=x.device)  # fmt: skip
        stats = _AllReduceSum.apply(torch.stack([xf.sum(dims), count]))
        n = stats[1]
        mean = stats[0] / n
        # two passes, as BatchNorm computes it: E[(x - mean)^2], not E[x^2] - mean^2 (which loses
        # digits where the mean is large against the spread)
        var = _AllReduceSum.apply(((xf - mean.view(shape)) ** 2).sum(dims)) / n
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                m = self.momentum
                if m is None:  # BatchNorm's cumulative moving average
                    m = 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(m * mean.to(self.running_mean.dtype))
                unbiased = var * n / (n - 1)
                self.running_var.mul_(1 - m).add_(m * unbiased.to(self.running_var.dtype))
        y = (xf - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.float().view(shape) + self.bias.float().view(shape)
        return y.to(x.dtype)


def global_batchnorm(model: nn.Module) -> nn.Module:
    """``model`` with every BatchNorm2d made a :class:`GlobalBatchNorm2d` in place (the same
    parameters and buffers, so state dicts and checkpoints are unchanged)."""
    for child in model.modules():
        if type(child) is nn.BatchNorm2d:
            child.__class__ = GlobalBatchNorm2d
    return model
