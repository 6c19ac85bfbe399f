"""The base class of every registered model: images in, L2-normalised descriptors out."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from vprbench.models.card import ModelCard, WeightsInfo


class VPRModel(nn.Module):
    """Base of every registered model: images [B, 3, H, W] in, L2-normalised descriptors [B, D] out."""

    card: ModelCard
    options: dict[str, Any]
    weights_info: WeightsInfo
    descriptor_dim: int
    batch_dependent: bool = False  # descriptors depend on which images share an inference batch

    def map_state_dict(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Turn a released checkpoint's keys into this module's keys (identity by default)."""
        return state_dict

    def load_checkpoint(self, state_dict: dict[str, torch.Tensor], source: str) -> str:
        """Load a released checkpoint with strict keys; returns what it was ("full" by default)."""
        from vprbench.models.weights import strict_load

        strict_load(self, self.map_state_dict(state_dict), source)
        return "full"
