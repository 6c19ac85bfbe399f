"""EDTformer (Tong-Jin01/EDTformer network.py VPRNet, SACA.py, backbone/vision_transformer.py),
with the parameter names of the released ``EDTformer.pth`` (``model_state_dict`` of a DataParallel
model: the ``module.`` prefix is stripped by vprbench's checkpoint reader).

- ``backbone``: DINOv2-B/14 (its mask token and final norm) with EDTformer's side chain of adapters
  (``backbone.adapters.N``, one per block; :class:`vprbench.models.vit.SideAdapter`); the decoder
  reads the final norm of the chain's output, CLS token first (``x_norm_clstoken`` and
  ``x_norm_patchtokens`` concatenated back together).
- ``fc``: Linear 768 -> 768 over those 1 + H/14 * W/14 tokens (the decoder's memory).
- ``decoder.layers.{0,1}``: nn.TransformerDecoder's copies of one SA_CA layer (d_model 768, 16
  heads, post-norm, no feed-forward, no final norm): x = norm1(x + SA(x)); x = norm2(x + CA(x, m)).
- ``queries`` [1, 64, 768]; ``channel_proj`` 768 -> 256 on each query, then ``row_proj`` 64 -> 16
  across the queries; flattened channel-major (256 x 16), L2: 4,096-d.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from vprbench.models.base import VPRModel
from vprbench.models.cards.edtformer import EDTFORMER_CARD
from vprbench.models.common import register_with_weights
from vprbench.models.vit import DINOv2ViT


class SACA(nn.Module):
    """EDTformer's simplified decoder block (SACA.py SA_CA, norm_first False, dropout 0.1 in
    training): self-attention over the queries, then cross-attention to the memory, each with a
    residual and a LayerNorm (eps 1e-5); no feed-forward block."""

    def __init__(self, dim: int = 768, heads: int = 16, dropout: float = 0.1) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.multihead_attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm1 = nn.LayerNorm(dim, eps=1e-5)
        self.norm2 = nn.LayerNorm(dim, eps=1e-5)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        attended = self.self_attn(x, x, x, need_weights=False)[0]
        x = self.norm1(x + self.dropout1(attended))
        attended = self.multihead_attn(x, memory, memory, need_weights=False)[0]
        return self.norm2(x + self.dropout2(attended))


class Decoder(nn.Module):
    """nn.TransformerDecoder(SA_CA, num_layers=2) without a final norm: its ``layers.N`` keys, deep
    copies of one layer (so they start from the same weights, as the official ones do)."""

    def __init__(self, layers: int = 2) -> None:
        super().__init__()
        layer = SACA()
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(layers))

    def forward(self, x: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, memory)
        return x


class EDTformer(VPRModel):
    QUERIES = 64

    def __init__(self) -> None:
        super().__init__()
        self.backbone = DINOv2ViT("vitb14", side_chain="edtformer")
        self.fc = nn.Linear(768, 768)
        self.decoder = Decoder()
        self.queries = nn.Parameter(torch.zeros(1, self.QUERIES, 768))
        nn.init.normal_(self.queries, std=1e-6)
        self.channel_proj = nn.Linear(768, 256)
        self.row_proj = nn.Linear(self.QUERIES, 16)
        self.descriptor_dim = 256 * 16

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (tokens,), _ = self.backbone(x)
        memory = self.fc(self.backbone.norm(tokens))
        out = self.decoder(self.queries.expand(x.shape[0], -1, -1), memory)
        out = self.row_proj(self.channel_proj(out).permute(0, 2, 1)).flatten(1)
        return F.normalize(out, dim=-1)


register_with_weights(EDTFORMER_CARD, EDTformer)
