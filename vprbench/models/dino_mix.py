"""DINO-Mix (GaoShuang98/DINO-Mix hubconf.py, models/backbones/DINOv2_self.py): the shared DINOv2-B/14
(``backbone.dino_model``, the hub model's keys with its mask token) over all 12 blocks, without its
final norm (the official code replaces ``norm`` by an identity: no keys), the patch tokens as a 16x16
map, and MixVPR (``aggregator``: 2 mixers of 256 positions, 768 -> 1,024 channels, 4 rows): 4,096-d.
"""

from __future__ import annotations

import torch
from torch import nn

from vprbench.errors import VPRBenchError
from vprbench.models.base import VPRModel
from vprbench.models.cards.dino_mix import DINO_MIX_CARD
from vprbench.models.common import register_with_weights
from vprbench.models.resnet_vpr import MixVPRAggregator
from vprbench.models.vit import DINOv2ViT, image_grid

GRID = 16  # hubconf.py DEFAULT_AGG_CONFIG in_h = in_w = 16: 224 x 224 inputs


class _Backbone(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.dino_model = DINOv2ViT("vitb14", final_norm=False)


class DINOMix(VPRModel):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = _Backbone()
        self.aggregator = MixVPRAggregator(768, GRID, GRID, out_channels=1024, depth=2, out_rows=4)
        self.descriptor_dim = 4096

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (tokens,), grid = self.backbone.dino_model(x)
        if grid != (GRID, GRID):
            raise VPRBenchError(
                f"dino-mix mixes a 16 x 16 patch map (224 x 224 input); got {tuple(x.shape[-2:])}"
            )
        return self.aggregator(image_grid(tokens, grid))


register_with_weights(DINO_MIX_CARD, DINOMix)
