"""Learning-rate schedules of the two stages, as pure functions of (step, epoch): a resumed run sets
exactly the rates an uninterrupted run would.

Fine-tuning (D2VPR finetune.py:76-80, finetune_script.py:67-76): AdamW at lr0, MultiStepLR milestones
[10, 20, 30] x 0.1 stepped per epoch, and a linear warm-up. The released code sets ``warmup_epochs =
3900`` and its BoQ-derived ``optimizer_step`` reads that as epochs, so on every step while epoch < 3900
it overwrites the rate with lr0 * (step + 1) / (3900 * steps_per_epoch): the rate never leaves the ramp
(about 6.2e-6 after 120 epochs) and the decays never happen. vprbench reads 3,900 as what it looks like,
iterations: lr0 * min(1, (step + 1) / 3900) times the decays. ``warmup_as_released`` reproduces the
released behaviour exactly, so that its effect can itself be ablated.

Distillation (D2VPR distillation.py:102): a StepLR is created and never stepped, so the rate is lr0
throughout; vprbench keeps that constant rate.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Schedule:
    """lr0, per-epoch multi-step decay, warm-up in iterations (or as released, in 'epochs')."""

    lr: float
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    warmup_steps: int = 0
    warmup_as_released: bool = False

    def lr_at(self, step: int, epoch: int, steps_per_epoch: int) -> float:
        """The rate for optimiser step ``step`` (0-based, counted over the whole run) in ``epoch``."""
        if self.warmup_as_released and self.warmup_steps:
            # finetune_script.py: `if self.trainer.current_epoch < self.warmup_epochs: lr_scale =
            # min(1, (global_step + 1) / (warmup_epochs * steps_per_epoch))`, replacing the rate.
            if epoch < self.warmup_steps:
                scale = min(1.0, (step + 1) / (self.warmup_steps * steps_per_epoch))
                return self.lr * scale
            return self.lr * self.gamma ** sum(epoch >= m for m in self.milestones)
        decay = self.gamma ** sum(epoch >= m for m in self.milestones)
        warm = min(1.0, (step + 1) / self.warmup_steps) if self.warmup_steps else 1.0
        return self.lr * decay * warm

    def describe(self) -> str:
        if self.warmup_as_released and self.warmup_steps:
            return (
                f"as released: warm-up read as {self.warmup_steps} epochs, overwriting the "
                f"MultiStepLR {list(self.milestones)} x {self.gamma} decays while it lasts"
            )
        parts = [f"lr {self.lr:g}"]
        if self.warmup_steps:
            parts.append(f"linear warm-up over {self.warmup_steps} iterations")
        if self.milestones:
            parts.append(f"x {self.gamma:g} at epochs {list(self.milestones)}")
        return ", ".join(parts) if len(parts) > 1 else f"constant lr {self.lr:g}"
