"""SelaVPR++'s standard single-branch model (Lu-Feng/SelaVPRplusplus model/network.py
GeoLocalizationNet with hashing and rerank off and GeM aggregation, model/vision_transformer.py,
model/adapter.py), with the parameter names of ``SelaVPRplusplus_{large,base}.pth``
(``model_state_dict`` of a DataParallel model: ``module.`` prefixes, stripped by the reader).

- ``backbone``: DINOv2-L/14 or -B/14 (mask token, final norm) whose blocks stay as pre-trained,
  with a side chain of MultiConv adapters (``backbone.adapters.N``: CricaVPR's
  :class:`vprbench.models.vit.MulConvAdapter`, without its skip): ViT-B from the embeddings over
  all 12 blocks, ViT-L from the 8th block's output over the last 16 (y = y + M(y + x)).
- The final norm of the chain's patch tokens as a square map, ``linear1`` (C -> C) on each token,
  then ``aggregation`` (L2 over channels, GeM with a learned exponent ``aggregation.1.p``,
  flatten), ``linear2`` (C -> 2,048 for ViT-B, 4,096 for ViT-L), L2.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vprbench.errors import VPRBenchError
from vprbench.models.base import VPRModel
from vprbench.models.cards.selavpr_plusplus import SELAVPR_PP_BASE_CARD, SELAVPR_PP_CARD
from vprbench.models.common import register_with_weights
from vprbench.models.pooling import GeM
from vprbench.models.resnet_vpr import L2Norm
from vprbench.models.vit import ARCHS, DINOv2ViT, image_grid

OUTPUT_DIMS = {"vitb14": 2048, "vitl14": 4096}  # network.py: output_dim per backbone


class SelaVPRPlusPlus(VPRModel):
    def __init__(self, backbone: str) -> None:
        super().__init__()
        channels = ARCHS[backbone][0]
        self.backbone = DINOv2ViT(backbone, side_chain="selavpr++")
        self.aggregation = nn.Sequential(L2Norm(), GeM(), nn.Flatten())
        self.linear1 = nn.Linear(channels, channels)
        self.linear2 = nn.Linear(channels, OUTPUT_DIMS[backbone])
        self.descriptor_dim = OUTPUT_DIMS[backbone]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (tokens,), grid = self.backbone(x)
        if grid[0] != grid[1]:  # network.py: W = H = int(math.sqrt(P - 1))
            raise VPRBenchError(
                f"selavpr++ reads a square patch map (as the official code); got "
                f"{tuple(x.shape[-2:])}: pass a square --image-size"
            )
        features = self.linear1(self.backbone.norm(tokens))
        pooled = self.aggregation(image_grid(features, grid))
        return F.normalize(self.linear2(pooled), dim=-1)


register_with_weights(SELAVPR_PP_CARD, lambda: SelaVPRPlusPlus("vitl14"))
register_with_weights(SELAVPR_PP_BASE_CARD, lambda: SelaVPRPlusPlus("vitb14"))
