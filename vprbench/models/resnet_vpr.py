"""The ResNet-50 methods D²-VPR is compared with: CosPlace, EigenPlaces and MixVPR, with the parameter
names of their official code so that the released files load with strict keys.

- CosPlace (gmberton/CosPlace, cosplace_model/cosplace_network.py) and EigenPlaces
  (gmberton/EigenPlaces, eigenplaces_model/eigenplaces_network.py) share one network: the torchvision
  ResNet-50 without average pooling and fc as a Sequential (``backbone.0`` .. ``backbone.7``), then
  ``aggregation`` = [L2 over channels, GeM (``aggregation.1.p``), flatten, Linear (``aggregation.3``),
  L2]. Released as bare state dicts (hubconf.py: ``{backbone}_{dim}_{cosplace|eigenplaces}.pth``).
- MixVPR (amaralibey/MixVPR, models/backbones/resnet.py and models/aggregators/mixvpr.py, demo.py):
  the torchvision ResNet-50 cropped after layer3 under ``backbone.model``, then 4 feature-mixer
  blocks over the 20 x 20 = 400 positions (LayerNorm, Linear, ReLU, Linear, residual), a channel
  projection 1024 -> 1024 and a row projection 400 -> 4: 4,096-d at 320 x 320, bicubic resize.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vprbench.errors import VPRBenchError
from vprbench.models.base import VPRModel
from vprbench.models.cards.resnet_vpr import CARDS, MIXVPR_CARD, PLACES_CARDS
from vprbench.models.common import load_weights, register_with_weights
from vprbench.models.pooling import GeM
from vprbench.models.registry import register_model


def resnet50_trunk() -> nn.Module:
    """torchvision's ResNet-50 (random init: vprbench never downloads at run time)."""
    import torchvision

    return torchvision.models.resnet50(weights=None)


class L2Norm(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, p=2, dim=1)


class GeoLocalizationNet(VPRModel):
    """CosPlace / EigenPlaces: ResNet-50 conv trunk -> L2 -> GeM -> Linear(2048, dim) -> L2."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        trunk = resnet50_trunk()
        self.backbone = nn.Sequential(*list(trunk.children())[:-2])  # no avgpool, no fc
        self.aggregation = nn.Sequential(
            L2Norm(), GeM(), nn.Flatten(), nn.Linear(2048, dim), L2Norm()
        )
        self.descriptor_dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.aggregation(self.backbone(x))


class _CroppedResNet(nn.Module):
    """MixVPR's backbone: ``model`` is a ResNet-50 whose layer4, avgpool and fc are removed."""

    def __init__(self) -> None:
        super().__init__()
        self.model = resnet50_trunk()
        self.model.layer4 = None
        self.model.avgpool = None
        self.model.fc = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.model
        x = m.maxpool(m.relu(m.bn1(m.conv1(x))))
        return m.layer3(m.layer2(m.layer1(x)))


class _FeatureMixer(nn.Module):
    def __init__(self, dim: int, mlp_ratio: int = 1) -> None:
        super().__init__()
        hidden = dim * mlp_ratio
        self.mix = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, hidden), nn.ReLU(),
                                 nn.Linear(hidden, dim))  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mix(x)


class MixVPRAggregator(nn.Module):
    """MixVPR (amaralibey/MixVPR models/aggregators/mixvpr.py): feature mixers over the h x w
    positions, then channel and row projections: [B, C, h, w] -> [B, out_channels x out_rows], L2."""

    def __init__(self, channels=1024, h=20, w=20, out_channels=1024, depth=4, out_rows=4) -> None:
        super().__init__()
        self.mix = nn.Sequential(*[_FeatureMixer(h * w) for _ in range(depth)])
        self.channel_proj = nn.Linear(channels, out_channels)
        self.row_proj = nn.Linear(h * w, out_rows)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.mix(x.flatten(2))  # [B, C, HW]: mixing across positions
        x = self.channel_proj(x.transpose(1, 2)).transpose(1, 2)  # [B, C', HW]
        return F.normalize(self.row_proj(x).flatten(1), dim=-1)  # [B, C' x rows]


class MixVPR(VPRModel):
    """x: [B, 3, 320, 320] -> layer3 features [B, 1024, 20, 20] -> MixVPR -> [B, 4096]."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = _CroppedResNet()
        self.aggregator = MixVPRAggregator()
        self.descriptor_dim = 4096

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.backbone(x)
        if features.shape[-2:] != (20, 20):
            raise VPRBenchError(
                f"mixvpr mixes a 20 x 20 feature map (320 x 320 input); got {tuple(x.shape[-2:])}"
            )
        return self.aggregator(features)


def _register_places(name: str, dims: tuple[int, ...]) -> None:
    card = CARDS[name]

    @register_model(card)
    def build(options, weights, cache_dir):
        dim = options["dim"]
        if dim not in dims:
            raise VPRBenchError(f"model '{name}': dim must be one of {list(dims)}, got {dim}")
        return load_weights(
            GeoLocalizationNet(dim), weights, card, cache_dir, card.official_url(options)
        )


for _name, (_dims, _url, _ref, _protocol) in PLACES_CARDS.items():
    _register_places(_name, _dims)


register_with_weights(MIXVPR_CARD, MixVPR)
