"""Cards of FoL's global stage (chenshunpeng/FoL), ViT-L/14 and ViT-B/14.

No torch here: `vprbench models list|info` and argument checks read the cards without importing
the model code."""

from __future__ import annotations

import dataclasses

from vprbench.models.card import ModelCard, WeightSource

_HF = "https://huggingface.co/shunpeng/FoL/resolve/main/"
# network_FoL.py max_len for an upsampled local map over 80 rows (the 504 and 322 inputs): the rows
# of one image's local features for --rerank fol (vprbench.models.fol.local_features)
LOCAL_ROWS = 3600
_PIPELINE = (
    "chenshunpeng/FoL datasets.py:18-21 (base_transform: ToTensor, Normalize) then :176-183 "
    "(transforms.functional.resize of the normalised tensor, no antialias argument; hard_resize "
    "for queries and database); requirements.txt pins torchvision==0.15.1, where that default is "
    "antialias=False for tensors. network_FoL.py FoLNet, backbone/dinov2_FoL.py (the hub DINOv2 "
    "with its final norm; the CLS-to-patch attention of the last block summed over heads), "
    "aggregators/FoL.py (SALAD's layers; the dust bin of each patch is 1 minus that attention, "
    "zeroed below 0.01). Commit e930a76"
)
_GLOBAL = (
    "vprbench computes FoL-global, the first column of each pair in the README, and with "
    "--rerank fol (fol-base) the re-ranking column (test_FoL.py rerank over the top 100)"
)

FOL_CARD = ModelCard(
    name="fol",
    description="FoL (global stage): DINOv2-L/14 with its final norm, SALAD's aggregator (64 "
    "clusters x 128 + a 256-d token: 8,448-d) with the dust bin of each patch set by the last "
    "block's CLS attention.",
    image_size=(504, 504),
    descriptor_dim=8448,
    interpolation="bilinear",
    resize="normalised",
    antialias=False,
    pipeline_source=_PIPELINE + "; parser.py:31 --resize 504 504",
    weights=WeightSource(
        url=_HF + "FoL_large.pth",
        note="hubconf.py fol_vitl14(): the file's model_state_dict, module. prefixes stripped; no "
        "sha256 is published. The official loaders are not strict (hubconf.py strict=False, "
        "util.py); vprbench is, with the key list of FoLNet's structure (train.py saves the whole "
        "model), so a file that differs fails by name instead of running half-loaded",
    ),
    reference="Wang et al., Focus on Local: Finding Reliable Discriminative Regions for Visual "
    "Place Recognition (AAAI 2025, arXiv 2504.09881)",
    licence="Apache-2.0 (chenshunpeng/FoL LICENSE)",
    protocol="504x504 (parser.py's default; the README's main table, ViT-L: Pitts30k-test "
    "93.9/97.2/98.1, MSLS-val 93.1/96.9/97.4, Tokyo 24/7 96.2/98.7/98.7, SPED 92.1/96.5/98.0, "
    "Nordland* 78.3/90.8/94.0, Nordland** 87.8/94.5/96.4 R@1/5/10); the README's 322x322 table "
    "(--image-size 322 322): Pitts30k-test 93.6/96.9/97.9, MSLS-val 92.8/96.9/97.2; the "
    "normalised tensor resized without antialiasing (torchvision 0.15); fp32; no PCA. " + _GLOBAL,
)

# the same pipeline, size, licence and reference; its own size, file and numbers
FOL_BASE_CARD = dataclasses.replace(
    FOL_CARD,
    name="fol-base",
    description="FoL (global stage) on DINOv2-B/14: as fol, 768-d tokens, 8,448-d.",
    image_size=(322, 322),
    pipeline_source=_PIPELINE + "; the README reports ViT-B at 322x322 only (--resize 322 322)",
    weights=WeightSource(
        url=_HF + "FoL_base.pth",
        note="hubconf.py fol_vitb14(): the file's model_state_dict, module. prefixes stripped; no "
        "sha256 is published. The official loaders are not strict (hubconf.py strict=False, "
        "util.py); vprbench is, with the key list of FoLNet's structure (train.py saves the whole "
        "model), so a file that differs fails by name instead of running half-loaded",
    ),
    protocol="322x322 (the README's 'Additional Results at 322x322', ViT-B: Pitts30k-test "
    "92.1/96.4/97.6, MSLS-val 91.1/95.7/96.4, Tokyo 24/7 94.6/96.5/96.8, Nordland* "
    "62.5/80.3/85.0, Nordland** 72.7/85.5/89.6 R@1/5/10); the normalised tensor resized without "
    "antialiasing (torchvision 0.15); fp32; no PCA. " + _GLOBAL,
)


CARDS = {card.name: card for card in (FOL_CARD, FOL_BASE_CARD)}
