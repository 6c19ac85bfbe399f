"""Card of SALAD.

No torch here: `vprbench models list|info` and argument checks read the cards without importing
the model code."""

from __future__ import annotations

from vprbench.models.card import ModelCard, WeightSource

SALAD_CARD = ModelCard(
    name="salad",
    description="SALAD: DINOv2-B/14 + optimal-transport aggregation (64 x 128 + 256 = 8,448-d).",
    image_size=(322, 322),
    descriptor_dim=8448,
    dtype="fp16",
    pipeline_source="serizba/salad eval.py:20-32 (T.Resize on the PIL image, bilinear, then "
    "ToTensor, Normalize) with README.md:50's --image_size 322 322 (eval.py:110's default None "
    "does not resize); eval.py:63 runs the model under torch.autocast(float16)",
    weights=WeightSource(
        url="https://github.com/serizba/salad/releases/download/v1.0.0/dino_salad.ckpt",
        note="the release's dino_salad.ckpt (a state dict with backbone.model.* and aggregator.*)",
    ),
    reference="Izquierdo & Civera, Optimal Transport Aggregation for Visual Place Recognition "
    "(CVPR 2024)",
    licence="GPL-3.0",
    protocol="322x322 PIL bilinear (eval.py), fp16 autocast; no PCA",
)


CARDS = {SALAD_CARD.name: SALAD_CARD}
