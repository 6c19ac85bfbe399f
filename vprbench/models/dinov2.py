"""The ``dinov2-gem`` baseline: DINOv2 patch tokens after the final norm, GeM-pooled."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vprbench.models.base import VPRModel
from vprbench.models.cards.dinov2 import DINOV2_GEM_CARD
from vprbench.models.common import backbone_with_gem, load_weights
from vprbench.models.pooling import GeM
from vprbench.models.registry import register_model
from vprbench.models.vit import DINOv2ViT, image_grid


class DINOv2GeM(VPRModel):
    """x: [B, 3, H, W] (H, W multiples of 14) -> normed patch tokens [B, C, H/14, W/14] -> GeM -> L2."""

    def __init__(self, arch: str) -> None:
        super().__init__()
        self.backbone = DINOv2ViT(arch)
        self.aggregation = GeM()
        self.descriptor_dim = self.backbone.embed_dim

    def map_state_dict(self, state_dict):
        return backbone_with_gem(state_dict)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (last,), grid = self.backbone(x)
        normed = self.backbone.norm(last)
        return F.normalize(self.aggregation(image_grid(normed, grid)), dim=1)


@register_model(DINOV2_GEM_CARD)
def build_dinov2_gem(options, weights, cache_dir) -> VPRModel:
    model = DINOv2GeM(options["backbone"])
    official = DINOV2_GEM_CARD.official_url(options)
    return load_weights(model, weights, DINOV2_GEM_CARD, cache_dir, official_url=official)
