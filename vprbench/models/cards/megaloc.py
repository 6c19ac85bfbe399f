"""Card of MegaLoc (gmberton/MegaLoc), the default model of VPR-methods-evaluation.

No torch here: `vprbench models list|info` and argument checks read the cards without importing
the model code."""

from __future__ import annotations

from vprbench.models.card import ModelCard, WeightSource

# The official code this card follows: megaloc_model.py at this commit (unchanged since 2026-01-21:
# 4a23a2b fixed the position-embedding interpolation of non-square inputs, swapping (W, H) for
# (H, W), and e31e8e0 moved the weights to safetensors; tools that load the hub model unpinned
# before that date ran other code)
MEGALOC_COMMIT = "1af071c"

MEGALOC_CARD = ModelCard(
    name="megaloc",
    description="MegaLoc: DINOv2-B/14 (final norm, no mask token), SALAD with 64 clusters x 256 + a "
    "256-d token (16,640-d), a linear layer to 8,448-d, L2.",
    image_size=(322, 322),
    descriptor_dim=8448,
    interpolation="bilinear",
    resize="normalised",
    antialias=True,
    resize_alternatives=("pil",),
    pipeline_source="gmberton/VPR-methods-evaluation test_dataset.py (ToTensor, Normalize, then "
    "transforms.Resize(image_size, antialias=True) of the normalised tensor; database batches, "
    "queries at batch 1, main.py:50-62); gmberton/MegaLoc megaloc_model.py (commit "
    f"{MEGALOC_COMMIT}) MegaLoc.forward rounds a side that is not a multiple of 14 to the nearest "
    "one with an antialiased tensor resize, and DINOv2.interpolate_pos_encoding (bicubic, "
    "scale_factor (rows + 0.1) / 37, (cols + 0.1) / 37)",
    weights=WeightSource(
        url="https://huggingface.co/gberton/MegaLoc/resolve/main/model.safetensors",
        note="hubconf.py: hf_hub_download('gberton/MegaLoc', 'model.safetensors'); no sha256 is "
        "published: vprbench records the file's in every run",
    ),
    reference="Berton & Masone, MegaLoc: One Retrieval to Place Them All (CVPR Workshops 2025, "
    "arXiv 2502.17237)",
    licence="MIT (gmberton/MegaLoc LICENSE)",
    protocol="322x322: the normalised tensor resized with antialiasing, as VPR-methods-evaluation "
    "resizes with --image_size 322 322 (gmberton/VPR-methods-evaluation#19 evaluated MegaLoc so); "
    "VPR-methods-evaluation's own default does not resize and lets the model round each side to a "
    "multiple of 14 (--native-resolution here: the model's forward does that rounding); fp32; no "
    "PCA. "
    f"Follows megaloc_model.py at commit {MEGALOC_COMMIT}",
)


CARDS = {MEGALOC_CARD.name: MEGALOC_CARD}
