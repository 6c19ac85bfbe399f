"""MegaLoc (gmberton/MegaLoc megaloc_model.py, commit in the card): the shared DINOv2-B/14 without
the mask token, its final norm applied to every token; the SALAD aggregator with 256-d clusters and a
256-d token (``aggregator.agg``); a linear layer 16,640 -> 8,448 (``aggregator.linear``); L2.

The official forward rounds a side that is not a multiple of 14 to the nearest multiple with an
antialiased bilinear resize of the (normalised) input tensor: kept here, so that native-resolution
evaluation (VPR-methods-evaluation's default) gives the official descriptors.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vprbench.models.base import VPRModel
from vprbench.models.cards.megaloc import MEGALOC_CARD
from vprbench.models.common import register_with_weights
from vprbench.models.salad import SALADAggregator
from vprbench.models.vit import PATCH, DINOv2ViT, image_grid

CLUSTERS, CLUSTER_DIM, TOKEN_DIM, OUT_DIM = 64, 256, 256, 8448


class MegaLocHead(nn.Module):
    """``agg``: SALAD (16,640-d, L2-normalised), then ``linear`` to 8,448."""

    def __init__(self) -> None:
        super().__init__()
        self.agg = SALADAggregator(768, CLUSTERS, CLUSTER_DIM, TOKEN_DIM)
        self.linear = nn.Linear(CLUSTERS * CLUSTER_DIM + TOKEN_DIM, OUT_DIM)

    def forward(self, features: torch.Tensor, token: torch.Tensor) -> torch.Tensor:
        return self.linear(self.agg(features, token))


def round_to_patches(x: torch.Tensor) -> torch.Tensor:
    """MegaLoc.forward: each side to the nearest multiple of 14 (Python's round: halves to even),
    resized with torchvision's antialiased bilinear tensor resize; unchanged when both are."""
    h, w = int(x.shape[-2]), int(x.shape[-1])
    if h % PATCH == 0 and w % PATCH == 0:
        return x
    size = (round(h / PATCH) * PATCH, round(w / PATCH) * PATCH)
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)


class MegaLoc(VPRModel):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = DINOv2ViT("vitb14", mask_token=False)
        self.aggregator = MegaLocHead()
        self.descriptor_dim = OUT_DIM

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (tokens,), grid = self.backbone(round_to_patches(x))
        tokens = self.backbone.norm(tokens)
        return F.normalize(self.aggregator(image_grid(tokens, grid), tokens[:, 0]), dim=-1)


register_with_weights(MEGALOC_CARD, MegaLoc)
