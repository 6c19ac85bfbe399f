"""Card of EDTformer (Tong-Jin01/EDTformer).

No torch here: `vprbench models list|info` and argument checks read the cards without importing
the model code."""

from __future__ import annotations

from vprbench.models.card import ModelCard, WeightSource

EDTFORMER_CARD = ModelCard(
    name="edtformer",
    description="EDTformer: DINOv2-B/14 with a side chain of low-rank parallel adapters (768 -> 4 -> "
    "768), a linear 768 -> 768, a 2-layer decoder of SA_CA blocks (self- and cross-attention, no "
    "feed-forward) over 64 learned queries, channel_proj 768 -> 256 and row_proj 64 -> 16: 4,096-d.",
    image_size=(322, 322),
    descriptor_dim=4096,
    interpolation="bilinear",
    resize="normalised",
    antialias=False,
    pipeline_source="Tong-Jin01/EDTformer datasets_ws.py:16-19 (base_transform: ToTensor, "
    "Normalize) then BaseDataset.__getitem__ :107-116 (transforms.functional.resize of the normalised tensor, no antialias "
    "argument) at parser.py:32's --resize 322 322; requirements.txt pins torchvision==0.15.0, where "
    "that default is antialias=False for tensors. network.py VPRNet, SACA.py SA_CA, "
    "backbone/vision_transformer.py forward_features (the adapter chain), "
    "backbone/LadderAdapter.py. Commit d0b85da",
    weights=WeightSource(
        url="https://github.com/Tong-Jin01/EDTformer/releases/download/v1.0.0/EDTformer.pth",
        note="hubconf.py EDTformer(): the file's model_state_dict, saved from a DataParallel model "
        "(module. prefixes), loaded strictly; the README also links a Google Drive copy. No sha256 "
        "is published",
    ),
    reference="Jin et al., EDTformer: An Efficient Decoder Transformer for Visual Place "
    "Recognition (IEEE TCSVT 2025)",
    licence="MIT (Tong-Jin01/EDTformer LICENSE)",
    protocol="322x322 (parser.py --resize), the normalised tensor resized without antialiasing "
    "(torchvision 0.15), eval.py's hard_resize test method, queries and database alike; one "
    "released file, trained on GSV-Cities, for every benchmark of the paper; fp32; no PCA",
)


CARDS = {EDTFORMER_CARD.name: EDTFORMER_CARD}
