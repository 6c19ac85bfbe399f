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
  re-ranks with. vprbench evaluates global retrieval only, so it is built (the released files hold
  it, and strict loading needs it) but never run: 2,654,592 of the 357,428,609 parameters.
- Evaluation input: 224 x 224 (parser.py ``--resize``), ``transforms.functional.resize``'s default
  bilinear, ImageNet mean and std (datasets_ws.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vprbench.errors import VPRBenchError
from vprbench.models.common import register_with_weights
from vprbench.models.pooling import GeM
from vprbench.models.registry import ModelCard, Release, VPRModel, WeightSource
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


SELAVPR_CARD = ModelCard(
    name="selavpr",
    description="SelaVPR global branch: DINOv2-L/14 with serial and parallel adapters, GeM (1,024-d); "
    "357,428,609 parameters, of which 2,654,592 in the unused local branch.",
    image_size=(224, 224),
    descriptor_dim=1024,
    resize="normalised",
    antialias=False,
    pipeline_source="Lu-Feng/SelaVPR datasets_ws.py:20-23 (base_transform: ToTensor, Normalize) "
    "then :108-112 (transforms.functional.resize of the normalised tensor, no antialias "
    "argument); requirements.txt:3 pins torchvision==0.15.0 (antialias=False for tensors)",
    weights=WeightSource(
        note="SelaVPR_msls.pth or SelaVPR_pitts30k.pth from the Google Drive links in the SelaVPR "
        "README; pass it as a file"
    ),
    releases=(
        Release(
            "msls",
            "SelaVPR_msls.pth",
            ("msls-val", "nordland-pnv"),
            note="README: fine-tuned on MSLS, reported on MSLS-val, Nordland-test, St Lucia",
        ),
        Release(
            "pitts30k",
            "SelaVPR_pitts30k.pth",
            ("pitts30k-test", "pitts250k-test"),
            note="README: further fine-tuned on Pitts30k, reported on Tokyo24/7, Pitts30k, "
            "Pitts250k",
        ),
    ),  # fmt: skip
    reference="Lu et al., Towards Seamless Adaptation of Pre-trained Models for Visual Place "
    "Recognition (ICLR 2024)",
    licence="MIT",
    protocol="224x224 (parser.py --resize); the paper re-ranks the global top-100 with the local "
    "features (eval.py --rerank_num 100), which vprbench does not: its recall is the global stage's",
)


register_with_weights(SELAVPR_CARD, SelaVPR)
