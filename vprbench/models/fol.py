"""FoL's global stage (chenshunpeng/FoL network_FoL.py FoLNet, backbone/dinov2_FoL.py,
aggregators/FoL.py), with the parameter names of ``FoL_large.pth`` / ``FoL_base.pth``
(``model_state_dict`` of a DataParallel model: ``module.`` prefixes, stripped by the reader).

- ``backbone.model``: the hub DINOv2 (ViT-L/14 or ViT-B/14, mask token, final norm applied).
- The last block's attention from the CLS token to each patch, summed over the heads (dinov2_FoL.py
  recomputes it from ``blocks[-1].norm1`` and ``attn.qkv`` on that block's input), zeroed below
  0.01 (network_FoL.py ``mask_guide``).
- ``aggregator``: SALAD's layers (token MLP C -> 512 -> 256, cluster and score convs C -> 512 ->
  128 / 64) without a learned dust bin: the dust-bin row of the optimal transport is, per patch,
  1 minus that attention (``log_optimal_transport(p, 1 - mask, 3)``); the rest as SALAD: 8,448-d.
  The aggregator's confidence and top-225 masks feed only the local features and training losses.
- ``upconv``, ``upconv2`` (C -> 256 -> 128 transposed convs): the local branch FoL re-ranks with;
  built for strict loading, never run (vprbench's recall is the global stage's).
"""

from __future__ import annotations

import torch
from torch import nn

from vprbench.models.base import VPRModel
from vprbench.models.cards.fol import FOL_BASE_CARD, FOL_CARD
from vprbench.models.common import register_with_weights
from vprbench.models.salad import SALADAggregator
from vprbench.models.vit import ARCHS, Block, DINOv2ViT, image_grid

GUIDE_FLOOR = 0.01  # network_FoL.py: torch.where(mask1 >= 0.01, mask1, 0)


def cls_attention(block: Block, tokens: torch.Tensor) -> torch.Tensor:
    """The softmax attention of ``block`` from the CLS token to each patch, summed over heads:
    [B, 1 + N, C] (the block's input) -> [B, N]."""
    attn = block.attn
    y = block.norm1(tokens)
    b, n, c = y.shape
    qkv = attn.qkv(y).reshape(b, n, 3, attn.num_heads, c // attn.num_heads).permute(2, 0, 3, 1, 4)
    q, k = qkv[0], qkv[1]  # [B, heads, 1 + N, c / heads]
    weights = ((q[:, :, :1] @ k.transpose(-2, -1)) * attn.scale).softmax(dim=-1)
    return weights[:, :, 0, 1:].sum(dim=1)


def dustbin_scores(attention: torch.Tensor) -> torch.Tensor:
    """FoL's dust-bin row [B, 1, N] from the CLS attention [B, N]: 1 - attention, where attention
    below 0.01 counts as 0 (``mask_guide``; ``log_optimal_transport(p, 1 - mask, 3)``)."""
    guide = torch.where(attention >= GUIDE_FLOOR, attention, torch.zeros_like(attention))
    return (1 - guide)[:, None]


class _Backbone(nn.Module):
    def __init__(self, arch: str) -> None:
        super().__init__()
        self.model = DINOv2ViT(arch)


class FoL(VPRModel):
    def __init__(self, backbone: str = "vitl14") -> None:
        super().__init__()
        channels = ARCHS[backbone][0]
        self.backbone = _Backbone(backbone)
        self.aggregator = SALADAggregator(channels, learned_dustbin=False)
        self.upconv = nn.ConvTranspose2d(channels, 256, kernel_size=3, stride=2, padding=1)
        self.upconv2 = nn.ConvTranspose2d(256, 128, kernel_size=3, stride=2, padding=1)
        self.descriptor_dim = 256 + 64 * 128

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        vit = self.backbone.model
        depth = len(vit.blocks)
        (before_last, tokens), grid = vit(x, take=(depth - 1, depth))
        dustbin = dustbin_scores(cls_attention(vit.blocks[-1], before_last))
        tokens = vit.norm(tokens)
        return self.aggregator(image_grid(tokens, grid), tokens[:, 0], dustbin=dustbin)


register_with_weights(FOL_CARD, lambda: FoL("vitl14"))
register_with_weights(FOL_BASE_CARD, lambda: FoL("vitb14"))
