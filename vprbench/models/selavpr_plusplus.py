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

The two-branch model (``SelaVPRplusplus_*_rerank.pth``: network.py with hashing and rerank on) adds a
second adapter chain (``backbone.adapters_hashing``) beside the first, whose normed patch tokens go
through ``linear3`` (C -> C), ``aggregation_hashing`` (L2, GeM, flatten), ``linear4`` (C -> 512), L2 and
the sign (``STE_binary``: +1 where >= 0, else -1): its descriptor is that 512-bit code as +-1, left
unnormalised, so that the exact L2 search ranks by Hamming distance (squared L2 = 4 x Hamming, exact
in float32) with ties by index, as test_rerank.py's ``faiss.IndexBinaryFlat(512)`` over the packed
bits. Its ``local_features`` are the first branch's float descriptor, which ``--rerank selavpr++``
re-ranks the top 100 with (vprbench.rerank.selavpr_plusplus).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vprbench.errors import VPRBenchError
from vprbench.models.base import VPRModel
from vprbench.models.cards.selavpr_plusplus import (
    SELAVPR_PP_BASE_CARD,
    SELAVPR_PP_BASE_RERANK_CARD,
    SELAVPR_PP_CARD,
    SELAVPR_PP_RERANK_CARD,
)
from vprbench.models.common import register_with_weights
from vprbench.models.pooling import GeM
from vprbench.models.resnet_vpr import L2Norm
from vprbench.models.vit import ARCHS, DINOv2ViT, image_grid

OUTPUT_DIMS = {"vitb14": 2048, "vitl14": 4096}  # network.py: output_dim per backbone
BINARY_DIM = 512  # eval_rerank.py: args.binary_features_dim


class SelaVPRPlusPlus(VPRModel):
    def __init__(self, backbone: str, two_branch: bool = False) -> None:
        super().__init__()
        channels = ARCHS[backbone][0]
        self.backbone = DINOv2ViT(backbone, side_chain="selavpr++2" if two_branch else "selavpr++")
        self.aggregation = nn.Sequential(L2Norm(), GeM(), nn.Flatten())
        self.linear1 = nn.Linear(channels, channels)
        self.linear2 = nn.Linear(channels, OUTPUT_DIMS[backbone])
        self.two_branch = two_branch
        if two_branch:
            self.aggregation_hashing = nn.Sequential(L2Norm(), GeM(), nn.Flatten())
            self.linear3 = nn.Linear(channels, channels)
            self.linear4 = nn.Linear(channels, BINARY_DIM)
            self.output_normalised = True  # +-1 codes: L2 on them ranks by Hamming distance
        self.descriptor_dim = BINARY_DIM if two_branch else OUTPUT_DIMS[backbone]

    def _chains(self, x: torch.Tensor, hashing: bool = True):
        chains, grid = self.backbone(x, hashing=hashing)
        if grid[0] != grid[1]:  # network.py: W = H = int(math.sqrt(P - 1))
            raise VPRBenchError(
                f"selavpr++ reads a square patch map (as the official code); got "
                f"{tuple(x.shape[-2:])}: pass a square --image-size"
            )
        return chains, grid

    def _float(self, tokens: torch.Tensor, grid) -> torch.Tensor:
        features = self.linear1(self.backbone.norm(tokens))
        pooled = self.aggregation(image_grid(features, grid))
        return F.normalize(self.linear2(pooled), dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        chains, grid = self._chains(x)
        if not self.two_branch:
            return self._float(chains[0], grid)
        features = self.linear3(self.backbone.norm(chains[1]))
        code = F.normalize(
            self.linear4(self.aggregation_hashing(image_grid(features, grid))), dim=-1
        )
        return torch.where(code >= 0, 1.0, -1.0).to(code.dtype)  # network.py STE_binary forward

    def local_features(self, x: torch.Tensor) -> torch.Tensor:
        """[B, 4,096 or 2,048]: the float descriptor of the first branch (the re-ranking features)."""
        if not self.two_branch:
            raise VPRBenchError(
                "selavpr++'s re-ranking needs the two-branch model (selavpr++-rerank)"
            )
        chains, grid = self._chains(x, hashing=False)  # the float chain alone
        return self._float(chains[0], grid)


register_with_weights(SELAVPR_PP_CARD, lambda: SelaVPRPlusPlus("vitl14"))
register_with_weights(SELAVPR_PP_BASE_CARD, lambda: SelaVPRPlusPlus("vitb14"))
register_with_weights(SELAVPR_PP_RERANK_CARD, lambda: SelaVPRPlusPlus("vitl14", two_branch=True))
register_with_weights(SELAVPR_PP_BASE_RERANK_CARD,
                      lambda: SelaVPRPlusPlus("vitb14", two_branch=True))  # fmt: skip
