"""Card of DINO-Mix (GaoShuang98/DINO-Mix).

No torch here: `vprbench models list|info` and argument checks read the cards without importing
the model code."""

from __future__ import annotations

from vprbench.models.card import ModelCard, WeightSource

DINO_MIX_CARD = ModelCard(
    name="dino-mix",
    description="DINO-Mix: DINOv2-B/14 (all 12 blocks, its final norm removed) and a MixVPR "
    "aggregator (2 mixers over 16x16 positions, 768 -> 1024 channels, 4 rows: 4,096-d).",
    image_size=(224, 224),
    descriptor_dim=4096,
    interpolation="bilinear",
    resize="normalised",
    antialias=False,
    pipeline_source="GaoShuang98/DINO-Mix eval_files/datasets_ws.py:17-20 (base_transform: "
    "ToTensor, Normalize) then :107-111 (transforms.functional.resize of the normalised tensor, "
    "no antialias argument) at parser_set_eval.py:30's --resize 224 224; requirements.txt pins "
    "torchvision==0.14.1, where that default is antialias=False for tensors. "
    "models/backbones/DINOv2_self.py: the hub ViT-B/14's forward_features over every block, with "
    "self.dino_model.norm replaced by an identity (x_norm_patchtokens is then unnormalised); "
    "layer1=7 only freezes blocks 0-7 during training. hubconf.py DEFAULT_AGG_CONFIG. Commit 98ce737",
    weights=WeightSource(
        url="https://github.com/GaoShuang98/DINO-Mix/releases/download/v1.0.0/dinov2_vitb14_mix.ckpt",
        note="hubconf.py dino_mix(): a Lightning checkpoint, its state_dict loaded strictly "
        "(backbone.dino_model.* and aggregator.*); no published sha256",
    ),
    reference="Huang et al., DINO-Mix: Enhancing Visual Place Recognition with Foundational "
    "Vision Model and Feature Mixing (Scientific Reports 2024)",
    licence="MIT (GaoShuang98/DINO-Mix LICENSE)",
    protocol="224x224 (the README: images must be resized to 224x224), the normalised tensor "
    "resized without antialiasing (torchvision 0.14); the README's ViTb14-Mix row: Pitts30k-val "
    "94.37/98.86/99.41 and Pitts30k-test 92.03/95.89/97.17 R@1/5/10; no PCA",
)


CARDS = {DINO_MIX_CARD.name: DINO_MIX_CARD}
