"""DINOv2 ViT backbones (timm modules, official key layout) and the ``dinov2-gem`` baseline."""

from __future__ import annotations

import timm
import torch
import torch.nn.functional as F

from vprbench.errors import VPRBenchError
from vprbench.models.common import load_weights
from vprbench.models.pooling import GeM
from vprbench.models.registry import ModelCard, VPRModel, WeightSource, register_model

# Official DINOv2 releases (facebookresearch/dinov2): no checksums are published with them.
DINOV2_URLS = {
    "vits14": "https://dl.fbaipublicfiles.com/dinov2/dinov2_vits14/dinov2_vits14_pretrain.pth",
    "vitb14": "https://dl.fbaipublicfiles.com/dinov2/dinov2_vitb14/dinov2_vitb14_pretrain.pth",
}
_TIMM_NAMES = {"vits14": "vit_small_patch14_dinov2", "vitb14": "vit_base_patch14_dinov2"}
PATCH = 14


def build_dinov2_backbone(arch: str) -> torch.nn.Module:
    """A DINOv2 ViT with position embeddings stored for 518x518 (37x37 patches), interpolated to the
    input grid on the fly, no classifier. Keys match the official ``dinov2_vit*14_pretrain.pth``
    except ``mask_token`` (used only in DINOv2 pre-training; see :func:`map_dinov2_keys`)."""
    if arch not in _TIMM_NAMES:
        raise VPRBenchError(f"DINOv2 backbone must be one of {sorted(_TIMM_NAMES)}, got {arch!r}")
    return timm.create_model(
        _TIMM_NAMES[arch], pretrained=False, img_size=518, dynamic_img_size=True, num_classes=0
    )


def map_dinov2_keys(state_dict: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Official DINOv2 keys -> ``prefix`` + timm keys. The one documented change: ``mask_token`` (the
    iBOT masking embedding, unused at inference) is dropped."""
    return {f"{prefix}{k}": v for k, v in state_dict.items() if k != "mask_token"}


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
    """x: [B, 3, H, W] (H, W multiples of 14) -> patch tokens [B, C, H/14, W/14] -> GeM -> L2 [B, C]."""

    def __init__(self, arch: str) -> None:
        super().__init__()
        self.backbone = build_dinov2_backbone(arch)
        self.aggregation = GeM()
        self.descriptor_dim = self.backbone.embed_dim

    def map_state_dict(self, state_dict):
        if any(k.startswith("backbone.") for k in state_dict):
            return state_dict
        mapped = map_dinov2_keys(state_dict, "backbone.")
        mapped.setdefault("aggregation.p", torch.ones(1) * 3.0)
        return mapped

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if h % PATCH or w % PATCH:
            raise VPRBenchError(f"DINOv2 input must be a multiple of 14 pixels, got {h}x{w}")
        tokens = self.backbone.forward_features(x)[:, self.backbone.num_prefix_tokens :]
        grid = tokens.transpose(1, 2).reshape(x.size(0), -1, h // PATCH, w // PATCH)
        return F.normalize(self.aggregation(grid), dim=1)


@register_model(DINOV2_GEM_CARD)
def build_dinov2_gem(options, weights, cache_dir) -> VPRModel:
    model = DINOv2GeM(options["backbone"])
    card = DINOV2_GEM_CARD
    if weights == "official":
        card = ModelCard(
            **{**card.as_dict(), "weights": WeightSource(url=DINOV2_URLS[options["backbone"]])}
        )
    return load_weights(model, weights, card, cache_dir)
