"""The ``dinov2-gem`` baseline: DINOv2 patch tokens after the final norm, GeM-pooled."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vprbench.models.common import backbone_with_gem, load_weights
from vprbench.models.pooling import GeM
from vprbench.models.registry import ModelCard, VPRModel, WeightSource, register_model
from vprbench.models.vit import DINOv2ViT, image_grid

# Official DINOv2 releases (facebookresearch/dinov2): no checksums are published with them.
DINOV2_URLS = {
    "vits14": "https://dl.fbaipublicfiles.com/dinov2/dinov2_vits14/dinov2_vits14_pretrain.pth",
    "vitb14": "https://dl.fbaipublicfiles.com/dinov2/dinov2_vitb14/dinov2_vitb14_pretrain.pth",
}

DINOV2_GEM_CARD = ModelCard(
    name="dinov2-gem",
    description="DINOv2 ViT (S/14 or B/14) patch tokens after the final norm, GeM-pooled, L2-normalised.",
    image_size=(224, 224),
    descriptor_dim=768,
    interpolation="bicubic",
    weights=WeightSource(
        url=DINOV2_URLS["vitb14"],
        note="ViT-S/14: " + DINOV2_URLS["vits14"] + "; pass --weights FILE|URL|official",
    ),
    options={"backbone": "vitb14"},
    reference="Oquab et al., DINOv2 (TMLR 2024)",
)


class DINOv2GeM(VPRModel):
    """x: [B, 3, H, W] (H, W multiples of 14) -> normed patch tokens [B, C, H/14, W/14] -> GeM -> L2."""

    def __init__(self, arch: str) -> None:
        super().__init__()
        self.backbone = DINOv2ViT(arch)
        self.aggregation = GeM()
        self.descriptor_dim = self.backbone.embed_dim

    def map_state_dict(self, state_dict):
        return backbone_with_gem(state_dict)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (last,), grid = self.backbone(x)
        normed = self.backbone.norm(last)
        return F.normalize(self.aggregation(image_grid(normed, grid)), dim=1)


@register_model(DINOV2_GEM_CARD)
def build_dinov2_gem(options, weights, cache_dir) -> VPRModel:
    model = DINOv2GeM(options["backbone"])
    official = DINOV2_URLS.get(options["backbone"])
    return load_weights(model, weights, DINOV2_GEM_CARD, cache_dir, official_url=official)
