"""Card of SuperVLAD.

No torch here: `vprbench models list|info` and argument checks read the cards without importing
the model code."""

from __future__ import annotations

from vprbench.models.card import ModelCard, WeightSource

CLUSTERS, GHOSTS, DIM = 4, 1, 768


SUPERVLAD_CARD = ModelCard(
    name="supervlad",
    description="SuperVLAD: DINOv2-B/14, 4 clusters + 1 ghost, cross-image encoder (3,072-d; "
    "batch-dependent; --set cross_image_encoder=false without it).",
    image_size=(322, 322),
    descriptor_dim=CLUSTERS * DIM,
    resize="normalised",
    antialias=False,
    pipeline_source="Lu-Feng/SuperVLAD datasets_ws.py:105-109 (base_transform, then "
    "transforms.functional.resize of the normalised tensor, no antialias argument); "
    "requirements.txt:3 pins torchvision==0.15.0 (antialias=False for tensors); README.md:37 "
    "evaluates with --infer_batch_size=8",
    batch_dependent=True,
    batch_convention="supervlad",
    weights=WeightSource(
        note="SuperVLAD.pth from the Google Drive links in the SuperVLAD README (one with, one "
        "without the cross-image encoder); pass it as a file"
    ),
    options={"cross_image_encoder": True},
    reference="Lu et al., SuperVLAD (NeurIPS 2024)",
    licence="MIT",
    protocol="322x322 (parser.py:67 --resize), the normalised tensor resized without "
    "antialiasing; 8 images per inference batch (README.md:37, the only test command in every "
    "revision; parser.py:13's default is 16), database then queries (test.py:24-45); no PCA",
)


CARDS = {SUPERVLAD_CARD.name: SUPERVLAD_CARD}
