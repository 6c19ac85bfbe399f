"""Cards of BoQ (ResNet-50 and DINOv2 backbones).

No torch here: `vprbench models list|info` and argument checks read the cards without importing
the model code."""

from __future__ import annotations

from vprbench.models.card import ModelCard, WeightSource

_RELEASE = "https://github.com/amaralibey/Bag-of-Queries/releases/download/v1.0/"


def _card(backbone: str, trunk: str, side: int, dim: int) -> ModelCard:
    """hubconf.py: MODEL_URLS[f"{backbone}_{dim}"]; the evaluation transform of
    src/dataloaders/datamodule.py (val_transform: bicubic) at the README's size."""
    return ModelCard(
        name=f"boq-{backbone}",
        description=f"BoQ: {trunk}, 2 blocks of 64 learned queries ({dim:,}-d).",
        image_size=(side, side),
        descriptor_dim=dim,
        interpolation="bicubic",
        resize="uint8",
        antialias=True,
        # README.md:42-51's snippet: ToTensor, bicubic antialiased resize of the [0, 1] tensor
        resize_alternatives=("unit",),
        dtype="fp16",
        pipeline_source="amaralibey/Bag-of-Queries src/dataloaders/pittsburgh.py:73 and "
        "mapillary_sls.py:63 (torchvision.io.decode_image, a uint8 tensor) through "
        "src/dataloaders/datamodule.py:51-55 (v2.Resize(size, interpolation=3): bicubic, "
        "antialiased, then ToDtype and Normalize); train.py:165 precision='16-mixed'; "
        "environment.yaml:9 pins torchvision==0.20.1. This validation code (commit 661e576, "
        "2024-12) postdates the README's table (5ecf256, 2024-07), whose own transform "
        "(README.md:42-51) resizes the [0, 1] tensor: stage unit, accepted as official too",
        weights=WeightSource(
            url=f"{_RELEASE}{backbone}_{dim}.pth", note="hubconf.py MODEL_URLS; no published sha256"
        ),  # fmt: skip
        reference="Ali-bey et al., BoQ: A Place is Worth a Bag of Learnable Queries (CVPR 2024)",
        licence="MIT",
        protocol=f"{side}x{side}, bicubic on the uint8 tensor (the validation path; the README's "
        "sizes; the README snippet's [0, 1]-tensor resize is --resize unit), fp16 (train.py's "
        "validation precision; the table's own precision is not stated); no PCA",
    )


CARDS = {
    "boq-resnet50": _card("resnet50", "ResNet-50 to layer3", 384, 16384),
    "boq-dinov2": _card("dinov2", "DINOv2-B/14", 322, 12288),
}
