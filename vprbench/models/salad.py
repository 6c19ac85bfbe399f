"""SALAD (serizba/salad: models/aggregators/salad.py, models/backbones/dinov2.py): DINOv2-B/14 with its
final LayerNorm (``backbone.model``, the hub model's keys; hubconf.py builds the released model with
``norm_layer: True``, so the norm is applied), then the SALAD aggregator (``aggregator``): a scene token MLP (768 -> 512 -> 256), local features
(1x1 convs 768 -> 512 -> 128) and a score (768 -> 512 -> 64 clusters), assigned to clusters by optimal
transport with a learned dust bin (3 log-space Sinkhorn iterations), aggregated per cluster,
normalised, and concatenated after the token: 256 + 64 x 128 = 8,448-d at 322x322.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vprbench.models.base import VPRModel
from vprbench.models.cards.salad import CLIQUEMINING_CARD, SALAD_CARD
from vprbench.models.common import register_with_weights
from vprbench.models.vit import DINOv2ViT, image_grid


def sinkhorn_with_dustbin(scores: torch.Tensor, dustbin: torch.Tensor, iters: int) -> torch.Tensor:
    """Log-space optimal transport of ``scores`` [B, M, N] (clusters x features) with one extra
    dust-bin row of value ``dustbin``: rows get mass 1/(M+N) each, the dust bin (N-M)/(M+N), columns
    1/(M+N); returns the log plan [B, M+1, N] scaled by M+N (SuperGlue's formulation)."""
    b, m, n = scores.shape
    couplings = torch.cat([scores, dustbin.expand(b, 1, n)], dim=1)  # a scalar, or [B, 1, N]
    norm = -torch.log(scores.new_tensor(float(m + n)))
    log_mu = torch.cat([norm.expand(m), (torch.log(scores.new_tensor(float(n - m))) + norm)[None]])
    log_nu = norm.expand(n)
    log_mu, log_nu = log_mu[None].expand(b, -1), log_nu[None].expand(b, -1)
    u, v = torch.zeros_like(log_mu), torch.zeros_like(log_nu)
    for _ in range(iters):
        u = log_mu - torch.logsumexp(couplings + v[:, None, :], dim=2)
        v = log_nu - torch.logsumexp(couplings + u[:, :, None], dim=1)
    return couplings + u[:, :, None] + v[:, None, :] - norm


class SALADAggregator(nn.Module):
    """``learned_dustbin`` False: no ``dust_bin`` parameter; the caller passes a dust-bin score per
    feature instead (FoL's, [B, 1, N])."""

    def __init__(self, channels=768, clusters=64, cluster_dim=128, token_dim=256,
                 learned_dustbin: bool = True) -> None:  # fmt: skip
        super().__init__()
        self.clusters = clusters
        self.token_features = nn.Sequential(nn.Linear(channels, 512), nn.ReLU(),
                                            nn.Linear(512, token_dim))  # fmt: skip
        # index 1 is the training dropout (identity at inference), so the convs are 0 and 3
        self.cluster_features = nn.Sequential(nn.Conv2d(channels, 512, 1), nn.Identity(), nn.ReLU(),
                                              nn.Conv2d(512, cluster_dim, 1))  # fmt: skip
        self.score = nn.Sequential(nn.Conv2d(channels, 512, 1), nn.Identity(), nn.ReLU(),
                                   nn.Conv2d(512, clusters, 1))  # fmt: skip
        self.dust_bin = nn.Parameter(torch.tensor(1.0)) if learned_dustbin else None

    def forward(
        self, features: torch.Tensor, token: torch.Tensor, dustbin: torch.Tensor | None = None
    ) -> torch.Tensor:
        dustbin = self.dust_bin if dustbin is None else dustbin
        f = self.cluster_features(features).flatten(2)  # [B, l, N]
        scores = self.score(features).flatten(2)  # [B, m, N]
        t = self.token_features(token)
        plan = torch.exp(sinkhorn_with_dustbin(scores, dustbin, 3))[:, :-1]  # [B, m, N]
        local = torch.einsum("bln,bmn->blm", f, plan)  # per cluster: sum of assigned features
        out = torch.cat([F.normalize(t, dim=-1), F.normalize(local, dim=1).flatten(1)], dim=-1)
        return F.normalize(out, dim=-1)


class _Backbone(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.model = DINOv2ViT("vitb14")


class SALAD(VPRModel):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = _Backbone()
        self.aggregator = SALADAggregator()
        self.descriptor_dim = 256 + 64 * 128

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (tokens,), grid = self.backbone.model(x)
        tokens = self.backbone.model.norm(tokens)  # hubconf.py: norm_layer True
        return self.aggregator(image_grid(tokens, grid), tokens[:, 0])


register_with_weights(SALAD_CARD, SALAD)
register_with_weights(CLIQUEMINING_CARD, SALAD)  # the same network, its own weights
