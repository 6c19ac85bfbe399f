"""Aggregators that turn a DINOv2 token map into a stack of 768-d tokens.

All take the global token ``cls`` [B, D] and the patch map ``patches`` [B, D, R, C] and return
tokens [B, T, D]:

- ``RegionalGeM`` (CricaVPR): CLS + GeM over 4 quadrants + 9 regions of the 5/6/5 split: T = 14.
- ``GlobalGeM``: GeM over the whole map: T = 1.
- ``TDDA`` (D²-VPR): the 13 regions made deformable, offsets guided by the global token, a bottom-up
  fusion into the global token, and a deformable position encoding: T = 14.

Each holds ``aggregation`` = L2Norm -> GeM -> Flatten, the module (and key) layout of both official repos.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vprbench.errors import VPRBenchError
from vprbench.models.pooling import GeM

# (x1, y1, x2, y2) in [0, 1] image coordinates (x across, y down) and (rows, cols) of the sampling grid.
MEDIUM_REGIONS = [
    ((0.0, 0.0, 0.5, 0.5), (8, 8)),
    ((0.5, 0.0, 1.0, 0.5), (8, 8)),
    ((0.0, 0.5, 0.5, 1.0), (8, 8)),
    ((0.5, 0.5, 1.0, 1.0), (8, 8)),
]
_S1, _S2 = 5 / 16, 11 / 16
SMALL_REGIONS = [
    ((x1, y1, x2, y2), (rows, cols))
    for (y1, y2, rows) in ((0.0, _S1, 5), (_S1, _S2, 6), (_S2, 1.0, 5))
    for (x1, x2, cols) in ((0.0, _S1, 5), (_S1, _S2, 6), (_S2, 1.0, 5))
]
REGIONS = MEDIUM_REGIONS + SMALL_REGIONS
# Which small regions overlap each medium region (row-major 3x3 small grid).
ADJACENCY = [[0, 1, 3, 4], [1, 2, 4, 5], [3, 4, 6, 7], [4, 5, 7, 8]]


class L2Norm(nn.Module):
    def __init__(self, dim: int = 1) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, p=2, dim=self.dim)


def gem_aggregation() -> nn.Sequential:
    """L2-normalise each location's channels, GeM over locations: [B, D, h, w] -> [B, D]."""
    return nn.Sequential(L2Norm(), GeM(), nn.Flatten(1))


# Official CricaVPR network.py:61-64 slices the patch map at fixed indices, whatever its size: quadrants
# at 8, the 3x3 regions at 5 and 11 (x_p[:,:,0:8,0:8] ... x_p[:,:,11:,11:]). At 224x224 (a 16x16 grid)
# these are the half and the 5/16, 11/16 cuts; at 322 or 448 they are still 8, 5 and 11, so the last
# regions grow. vprbench reproduces the official slicing at every size.
QUADRANT_CUT = 8
REGION_CUTS = (5, 11)


class RegionalGeM(nn.Module):
    """CricaVPR's fixed regions: CLS, then GeM of 4 quadrants (cut at patch 8) and 9 regions (cuts at
    patches 5 and 11), at the official fixed indices for every input size."""

    def __init__(self) -> None:
        super().__init__()
        self.aggregation = gem_aggregation()

    def forward(self, cls: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
        rows, cols = patches.shape[-2:]
        if min(rows, cols) <= REGION_CUTS[1]:
            raise VPRBenchError(
                f"regional GeM cuts the patch grid at 5, 8 and 11 (official CricaVPR), so it needs "
                f"at least 12x12 patches (168x168 pixels), got {rows}x{cols}"
            )
        h, (c1, c2) = QUADRANT_CUT, REGION_CUTS
        halves = (slice(0, h), slice(h, None))
        thirds = (slice(0, c1), slice(c1, c2), slice(c2, None))
        medium = [(r, c) for r in halves for c in halves]
        small = [(r, c) for r in thirds for c in thirds]
        pooled = [self.aggregation(patches[:, :, r, c]) for r, c in medium + small]
        return torch.stack([cls, *pooled], dim=1)


class GlobalGeM(nn.Module):
    """GeM over the whole patch map: one token."""

    def __init__(self) -> None:
        super().__init__()
        self.aggregation = gem_aggregation()

    def forward(self, cls: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
        return self.aggregation(patches).unsqueeze(1)


def _mlp(dim: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(dim, hidden),
        nn.LayerNorm(hidden),
        nn.GELU(),
        nn.Dropout(0.1),
        nn.Linear(hidden, dim),
    )


class HierarchicalDownTopFusion(nn.Module):
    """Each medium region adds an MLP of the mean of its 4 overlapping small regions; the global token
    adds an MLP of the mean of the 4 enhanced medium regions. Only the enhanced global is returned."""

    def __init__(self, dim: int = 768, hidden: int = 256) -> None:
        super().__init__()
        self.small_to_medium = _mlp(dim, hidden)
        self.medium_to_global = _mlp(dim, hidden)

    def forward(self, cls: torch.Tensor, medium: list[torch.Tensor], small: list[torch.Tensor]):
        enhanced = [
            m + self.small_to_medium(torch.stack([small[j] for j in ADJACENCY[i]]).mean(0))
            for i, m in enumerate(medium)
        ]
        return cls + self.medium_to_global(torch.stack(enhanced).mean(0))


class DeformablePositionEncoder(nn.Module):
    """MLP(4 -> 128 -> D) of each token's box (cx, cy, w, h), added to the token."""

    def __init__(self, dim: int = 768, hidden: int = 128) -> None:
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(4, hidden), nn.ReLU(), nn.Linear(hidden, dim))

    def forward(self, tokens: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        return tokens + self.fc(boxes)


def _base_grid(roi, size, device) -> torch.Tensor:
    x1, y1, x2, y2 = roi
    gy, gx = torch.meshgrid(
        torch.linspace(y1, y2, size[0], device=device),
        torch.linspace(x1, x2, size[1], device=device),
        indexing="ij",
    )
    return torch.stack((gx, gy), dim=-1)  # [rows, cols, 2] as (x, y)


class TDDA(nn.Module):
    """Top-Down-attention-based Deformable Aggregator (D²-VPR).

    For each of the 13 regions, every sampling point gets its own offset (dx, dy) and scale (sx, sy)
    read from a 4-channel map that a 1x1-conv generator predicts from the patch map joined with the
    broadcast global token (``guidance=True``; ``False`` uses the patch map alone). Official quirks kept,
    because they change outputs: the offset map is sampled at the region's [0, 1] coordinates as if
    they were grid_sample's [-1, 1] ones; dx, dy are clamped to +/-0.25 of the region size; scales are
    0.5 + 1.5 * sigmoid(.); points are clamped to [0, 1]. Features are resampled (bilinear, border,
    align_corners) and GeM-pooled per region.

    The offset map depends only on the image, not on the region, so it is computed once per forward;
    ``recompute_offsets_per_region=True`` runs the generator once per region, as the official code
    does (13 times): same outputs, more FLOPs. Returns [global, 4 medium, 9 small] tokens, [B, 14, D].
    """

    MAX_OFFSET = 0.25

    def __init__(self, dim: int = 768, guidance: bool = True) -> None:
        super().__init__()
        self.guidance = guidance
        self.recompute_offsets_per_region = False
        self.aggregation = gem_aggregation()
        in_ch = 2 * dim if guidance else dim
        self.offset_generator = nn.Sequential(
            nn.Conv2d(in_ch, 512, kernel_size=1), nn.ReLU(), nn.Conv2d(512, 4, kernel_size=1)
        )
        self.topdown_fusion = HierarchicalDownTopFusion(dim, 256)
        self.pos_encoder = DeformablePositionEncoder(dim, 128)

    def offset_map(self, cls: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
        """[B, 4, R, C]: (dx, dy, log sx, log sy) per patch location."""
        if self.guidance:
            b, d, r, c = patches.shape
            patches = torch.cat([patches, cls.view(b, d, 1, 1).expand(-1, -1, r, c)], dim=1)
        return self.offset_generator(patches)

    def deform(self, offsets: torch.Tensor, roi, size) -> torch.Tensor:
        """Deformed sampling points of one region, [B, rows, cols, 2] in [0, 1]."""
        x1, y1, x2, y2 = roi
        width, height = x2 - x1, y2 - y1
        base = (
            _base_grid(roi, size, offsets.device).unsqueeze(0).expand(offsets.shape[0], -1, -1, -1)
        )
        sampled = F.grid_sample(
            offsets, base, mode="bilinear", padding_mode="border", align_corners=True
        ).permute(0, 2, 3, 1)
        dxdy = sampled[..., :2].clamp(-self.MAX_OFFSET, self.MAX_OFFSET)
        scale = 0.5 + 1.5 * torch.sigmoid(sampled[..., 2:])
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        rel_x = (base[..., 0] - cx) / (width / 2)
        rel_y = (base[..., 1] - cy) / (height / 2)
        x = cx + rel_x * scale[..., 0] * (width / 2) + dxdy[..., 0] * width
        y = cy + rel_y * scale[..., 1] * (height / 2) + dxdy[..., 1] * height
        return torch.stack((x.clamp(0, 1), y.clamp(0, 1)), dim=-1)

    def pool(self, patches: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """GeM of the features resampled at ``points`` [B, rows, cols, 2] -> [B, D]."""
        warped = F.grid_sample(
            patches, points * 2 - 1, mode="bilinear", padding_mode="border", align_corners=True
        )
        return self.aggregation(warped)

    @staticmethod
    def box(points: torch.Tensor) -> torch.Tensor:
        """(cx, cy, w, h) of the deformed points, [B, 4]."""
        x, y = points[..., 0], points[..., 1]
        return torch.stack(
            [
                x.mean(dim=(1, 2)),
                y.mean(dim=(1, 2)),
                x.amax(dim=(1, 2)) - x.amin(dim=(1, 2)),
                y.amax(dim=(1, 2)) - y.amin(dim=(1, 2)),
            ],
            dim=1,
        )

    def forward(self, cls: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
        offsets = None if self.recompute_offsets_per_region else self.offset_map(cls, patches)
        pooled, boxes = [], []
        for roi, size in REGIONS:
            region_offsets = self.offset_map(cls, patches) if offsets is None else offsets
            points = self.deform(region_offsets, roi, size)
            pooled.append(self.pool(patches, points))
            boxes.append(self.box(points))
        medium, small = pooled[:4], pooled[4:]
        enhanced_global = self.topdown_fusion(cls, medium, small)
        global_box = cls.new_tensor([0.5, 0.5, 1.0, 1.0]).expand(cls.shape[0], 4)
        tokens = torch.stack([enhanced_global, *medium, *small], dim=1)
        return self.pos_encoder(tokens, torch.stack([global_box, *boxes], dim=1))
