"""SelaVPR's global branch (Lu-Feng/SelaVPR: network.py GeoLocalizationNet, backbone/dinov2/block.py,
parser.py), with the parameter names of the released files (``model_state_dict`` of a DataParallel
model: a ``module.`` prefix, stripped by vprbench's checkpoint reader).

- ``backbone``: DINOv2-L/14 (24 blocks, no registers: the README's models) with SelaVPR's adapters in
  every block: a serial adapter after the attention and a parallel one beside the MLP (x 0.2), each
  1024 -> 512 -> 1024 with ReLU.
- The global descriptor: the normalised patch tokens (``x_norm_patchtokens``) as a 16 x 16 map (the
  official code hard-codes it, so the input must be 224 x 224), L2 over channels, GeM
  (``aggregation.1.p``), L2: 1,024-d.
- ``LocalAdapt`` (two transposed convs, 1024 -> 256 -> 128) makes the dense local features SelaVPR
  re-ranks with (``local_features``: a 61 x 61 map of 128-d features, each L2-normalised, as
  network.py's forward returns them; vprbench.rerank.selavpr matches them). Global retrieval does
  not run it: 2,654,592 of the 357,428,609 parameters.
- Evaluation input: 224 x 224 (parser.py ``--resize``), ``transforms.functional.resize``'s default
  bilinear, ImageNet mean and std (datasets_ws.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vprbench.errors import VPRBenchError
from vprbench.models.base import VPRModel
from vprbench.models.cards.selavpr import SELAVPR_CARD
from vprbench.models.common import register_with_weights
from vprbench.models.pooling import GeM
from vprbench.models.resnet_vpr import L2Norm
from vprbench.models.vit import DINOv2ViT, image_grid

GRID = 16  # network.py: view(-1, 16, 16, 1024)


class LocalAdapt(nn.Module):
    """The local branch's upsampling (not used for global retrieval)."""

    def __init__(self) -> None:
        super().__init__()
        self.upconv1 = nn.ConvTranspose2d(1024, 256, kernel_size=3, stride=2, padding=1)
        self.upconv2 = nn.ConvTranspose2d(256, 128, kernel_size=3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.upconv2(F.relu(self.upconv1(x)))


class SelaVPR(VPRModel):
    LOCAL_BRANCH_PARAMETERS = 2_654_592

    def __init__(self) -> None:
        super().__init__()
        self.backbone = DINOv2ViT("vitl14", adapters="sela")
        self.aggregation = nn.Sequential(L2Norm(), GeM(), nn.Flatten())
        self.LocalAdapt = LocalAdapt()
        self.descriptor_dim = 1024

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (tokens,), grid = self.backbone(x)
        if grid != (GRID, GRID):
            raise VPRBenchError(
                f"selavpr reads a 16 x 16 patch grid (224 x 224 input); got {tuple(x.shape[-2:])}"
            )
        features = image_grid(self.backbone.norm(tokens), grid)
        return F.normalize(self.aggregation(features), dim=-1)

    def local_features(self, x: torch.Tensor) -> torch.Tensor:
        """[B, 61, 61, 128]: network.py's ``local_feature`` (LocalAdapt of the 16 x 16 normalised
        patch tokens, channels last, L2-normalised over channels)."""
        (tokens,), grid = self.backbone(x)
        if grid != (GRID, GRID):
            raise VPRBenchError(
                f"selavpr reads a 16 x 16 patch grid (224 x 224 input); got {tuple(x.shape[-2:])}"
            )
        local = self.LocalAdapt(image_grid(self.backbone.norm(tokens), grid))
        return F.normalize(local.permute(0, 2, 3, 1), dim=-1)


register_with_weights(SELAVPR_CARD, SelaVPR)
