"""Bag-of-Queries (amaralibey/Bag-of-Queries: src/boq.py, src/backbones.py, hubconf.py), with the
parameter names of the released ``resnet50_16384.pth`` and ``dinov2_12288.pth`` (bare state dicts of
hubconf's ``VPRModel``: ``backbone.*``, ``aggregator.*``).

- Backbones: ResNet-50 cropped after layer3 as ``backbone.net`` (a Sequential: conv1 0, bn1 1,
  relu 2, maxpool 3, layer1-3 4-6), 1024 channels; or the hub DINOv2-B/14 as ``backbone.dino``, its
  patch tokens after the last block (no final norm: it is in the file but unused) as a feature map.
- Aggregator: a 3x3 conv to ``proj`` channels (512 for ResNet, 384 for DINOv2), LayerNorm over the
  tokens, then 2 BoQ blocks. Each block runs a post-norm transformer encoder layer (feed-forward 4x,
  no dropout) over the tokens; its 64 learned queries attend to themselves (residual, LayerNorm),
  then cross-attend to the tokens (LayerNorm). The 2 x 64 query outputs are mixed by a Linear
  128 -> 32 per channel, flattened and L2-normalised: 512 x 32 = 16,384-d or 384 x 32 = 12,288-d.
- Evaluation input (src/dataloaders/datamodule.py, val_transform): bicubic resize (interpolation=3),
  ImageNet mean and std; 384 x 384 for ResNet-50 and 322 x 322 for DINOv2 (the README's settings).
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from vprbench.models.base import VPRModel
from vprbench.models.cards.boq import CARDS
from vprbench.models.common import register_with_weights
from vprbench.models.resnet_vpr import resnet50_trunk
from vprbench.models.vit import DINOv2ViT, image_grid


class BoQBlock(nn.Module):
    def __init__(self, dim: int, queries: int, heads: int) -> None:
        super().__init__()
        self.encoder = nn.TransformerEncoderLayer(
            d_model=dim, nhead=heads, dim_feedforward=4 * dim, dropout=0.0, batch_first=True
        )
        self.queries = nn.Parameter(torch.randn(1, queries, dim))
        # The queries' self-attention does not depend on the image (BoQ trains it for stability).
        self.self_attn = nn.MultiheadAttention(dim, num_heads=heads, batch_first=True)
        self.norm_q = nn.LayerNorm(dim)
        self.cross_attn = nn.MultiheadAttention(dim, num_heads=heads, batch_first=True)
        self.norm_out = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.encoder(x)
        q = self.queries.expand(x.shape[0], -1, -1)
        q = self.norm_q(q + self.self_attn(q, q, q, need_weights=False)[0])
        out = self.norm_out(self.cross_attn(q, x, x, need_weights=False)[0])
        return x, out


class BoQAggregator(nn.Module):
    def __init__(self, channels: int, proj: int, queries: int = 64, layers: int = 2,
                 rows: int = 32) -> None:  # fmt: skip
        super().__init__()
        self.proj_c = nn.Conv2d(channels, proj, kernel_size=3, padding=1)
        self.norm_input = nn.LayerNorm(proj)
        self.boqs = nn.ModuleList(BoQBlock(proj, queries, proj // 64) for _ in range(layers))
        self.fc = nn.Linear(layers * queries, rows)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = self.norm_input(self.proj_c(features).flatten(2).transpose(1, 2))  # [B, HW, proj]
        outs = []
        for block in self.boqs:
            x, out = block(x)
            outs.append(out)
        mixed = self.fc(torch.cat(outs, dim=1).transpose(1, 2))  # [B, proj, rows]
        return F.normalize(mixed.flatten(1), dim=-1)


class _ResNetBackbone(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        r = resnet50_trunk()
        self.net = nn.Sequential(r.conv1, r.bn1, r.relu, r.maxpool, r.layer1, r.layer2, r.layer3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class _DinoBackbone(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.dino = DINOv2ViT("vitb14")  # its final norm is kept for strict keys, not applied

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (tokens,), grid = self.dino(x)
        return image_grid(tokens, grid)


class BoQ(VPRModel):
    def __init__(self, backbone: str) -> None:
        super().__init__()
        if backbone == "resnet50":
            self.backbone, channels, proj = _ResNetBackbone(), 1024, 512
        else:
            self.backbone, channels, proj = _DinoBackbone(), 768, 384
        self.aggregator = BoQAggregator(channels, proj)
        self.descriptor_dim = proj * 32

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.aggregator(self.backbone(x))


for _name, _boq_card in CARDS.items():
    register_with_weights(_boq_card, partial(BoQ, _name.split("-")[1]))
