"""Card of the DINOv2 GeM reference model, and the official DINOv2 weight URLs.

No torch here: `vprbench models list|info` and argument checks read the cards without importing
the model code."""

from __future__ import annotations

from vprbench.models.card import ModelCard, WeightSource

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
    option_urls={"backbone": DINOV2_URLS},
    reference="Oquab et al., DINOv2 (TMLR 2024)",
    licence="Apache-2.0 (facebookresearch/dinov2: code and weights)",
    protocol="a vprbench reference: the pre-trained DINOv2 backbone, not fine-tuned for VPR, its "
    "normed patch tokens GeM-pooled, at 224x224 bicubic (DINOv2's own evaluation resizes to 256 "
    "and centre-crops 224: dinov2/data/transforms.py); no "
    "paper's model, so no official protocol",
)


CARDS = {DINOV2_GEM_CARD.name: DINOV2_GEM_CARD}
