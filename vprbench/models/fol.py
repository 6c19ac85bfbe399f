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
- ``upconv``, ``upconv2`` (C -> 256 -> 128 transposed convs): the local branch FoL re-ranks with
  (``local_features``, for ``--rerank fol``; network_FoL.py ``forward`` at test time, aggregators/FoL.py
  ``forward`` for the regions): the transport plan's mean over the clusters per patch, its top 3
  values set to the value at rank int(0.05 N) (``replace_top_values``), softmaxed, its top 225
  patches (the discriminative regions) nearest-upsampled to the upconvs' map, whose features at those
  positions (row-major) are kept, zero-padded to 3,600 rows (``max_len`` for maps over 80 wide) and
  L2-normalised (padding stays 0).
"""

from __future__ import annotations

import torch
from torch import nn

from vprbench.errors import VPRBenchError
from vprbench.models.base import VPRModel
from vprbench.models.cards.fol import FOL_BASE_CARD, FOL_CARD, LOCAL_ROWS
from vprbench.models.common import register_with_weights
from vprbench.models.salad import SALADAggregator, sinkhorn_with_dustbin
from vprbench.models.vit import ARCHS, Block, DINOv2ViT, image_grid

GUIDE_FLOOR = 0.01  # network_FoL.py: torch.where(mask1 >= 0.01, mask1, 0)
REGIONS = 225  # aggregators/FoL.py forward: num_select


def local_rows(height: int) -> int:
    """network_FoL.py's ``max_len``: the rows an image's local features are padded to."""
    if height > 80:
        return LOCAL_ROWS
    if height > 70:
        return 3500
    if height > 40:
        return 1000
    return height * height


def replace_top_values(values: torch.Tensor, count: int = 3) -> torch.Tensor:
    """aggregators/FoL.py ``replace_top_values`` on a copy: the ``count`` largest of each row [B, N]
    set to the row's value at descending rank int(0.05 N)."""
    out = values.clone()
    top = torch.topk(out, count, dim=1, largest=True, sorted=False).indices
    kth = out.sort(dim=1, descending=True).values[:, int(0.05 * out.size(1))]
    return out.scatter_(1, top, kth[:, None].expand(-1, count))


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

    def _tokens(self, x: torch.Tensor):
        vit = self.backbone.model
        depth = len(vit.blocks)
        (before_last, tokens), grid = vit(x, take=(depth - 1, depth))
        dustbin = dustbin_scores(cls_attention(vit.blocks[-1], before_last))
        tokens = vit.norm(tokens)
        return image_grid(tokens, grid), tokens[:, 0], dustbin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features, token, dustbin = self._tokens(x)
        return self.aggregator(features, token, dustbin=dustbin)

    def regions(self, features: torch.Tensor, dustbin: torch.Tensor) -> torch.Tensor:
        """[B, H, W] 0/1: the 225 patches of the highest confidence (aggregators/FoL.py, test)."""
        b, _, h, w = features.shape
        scores = self.aggregator.score(features).flatten(2)
        plan = torch.exp(sinkhorn_with_dustbin(scores, dustbin, 3))[:, :-1]  # [B, m, N]
        confidence = replace_top_values(plan.mean(dim=1)).softmax(dim=-1)
        top = torch.topk(confidence, REGIONS, dim=-1).indices
        mask = torch.zeros(b, h * w, dtype=torch.float32, device=features.device)
        return mask.scatter_(1, top, 1).view(b, h, w)

    def local_features(self, x: torch.Tensor) -> torch.Tensor:
        """[B, rows, 128]: the upconvs' features in the discriminative regions, zero-padded."""
        features, _, dustbin = self._tokens(x)
        mask = self.regions(features, dustbin)
        up = self.upconv2(torch.relu(self.upconv(features))).permute(0, 2, 3, 1)  # [B, H', W', 128]
        mask = nn.functional.interpolate(mask[:, None], size=up.shape[1:3], mode="nearest")[:, 0]
        rows = local_rows(up.shape[1])
        out = up.new_zeros(up.shape[0], rows, up.shape[-1])
        for i in range(up.shape[0]):
            selected = up[i].reshape(-1, up.shape[-1])[mask[i].flatten() != 0]
            if len(selected) > rows:  # the official pad_sequence would make the batch longer
                raise VPRBenchError(f"FoL: {len(selected)} region features, over its {rows} rows")
            out[i, : len(selected)] = selected
        return nn.functional.normalize(out, p=2, dim=-1)


register_with_weights(FOL_CARD, lambda: FoL("vitl14"))
register_with_weights(FOL_BASE_CARD, lambda: FoL("vitb14"))
