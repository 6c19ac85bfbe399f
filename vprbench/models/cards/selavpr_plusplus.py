"""Cards of SelaVPR++'s standard (floating-point, single-branch) models, DINOv2-L and DINOv2-B.

No torch here: `vprbench models list|info` and argument checks read the cards without importing
the model code."""

from __future__ import annotations

import dataclasses

from vprbench.models.card import ModelCard, WeightSource

_HF = "https://huggingface.co/fenglu96/SelaVPRplusplus/resolve/main/"
_PIPELINE = (
    "Lu-Feng/SelaVPRplusplus datasets_ws.py:18-21 (base_transform: ToTensor, Normalize) then "
    ":90-94 (transforms.functional.resize of the normalised tensor, no antialias argument) at "
    "parser.py:53's --resize 322 322. The repository pins no torchvision; vprbench follows the "
    "torchvision 0.15 of the same lab's SelaVPR, CricaVPR and EDTformer (antialias=False for "
    "tensors): --antialias gives torchvision >= 0.17's default. model/network.py "
    "GeoLocalizationNet (hashing and rerank off, aggregation gem), model/vision_transformer.py "
    "forward_features (the MultiConv adapter chain), model/adapter.py MulConvAdapter. Commit 56bd921"
)
_INPUT = (
    "322x322 (parser.py --resize), the normalised tensor resized without antialiasing, "
    "hard_resize for queries and database; fp32; no PCA. "
)
_PROTOCOL = _INPUT + (
    "The two-branch re-ranking models (SelaVPRplusplus_*_rerank.pth) are the cards "
    "selavpr++-rerank and selavpr++-base-rerank. Trained on the authors' unified dataset; the "
    "README's R@1: "
)

SELAVPR_PP_CARD = ModelCard(
    name="selavpr++",
    description="SelaVPR++ (standard VPR): DINOv2-L/14 with a side chain of 16 MultiConv adapters "
    "over its last 16 blocks (memory-efficient adaptation), final norm, a linear 1024 -> 1024 on "
    "the patch tokens, L2 over channels, GeM, a linear to 4,096, L2.",
    image_size=(322, 322),
    descriptor_dim=4096,
    interpolation="bilinear",
    resize="normalised",
    antialias=False,
    pipeline_source=_PIPELINE,
    weights=WeightSource(
        url=_HF + "SelaVPRplusplus_large.pth",
        note="the README's model table (hubconf.py loads a file of the same name from the GitHub "
        "release SelaVPR++, strictly): model_state_dict of a DataParallel model; no sha256 is "
        "published",
    ),
    reference="Lu et al., SelaVPR++: Towards Seamless Adaptation of Foundation Models for "
    "Efficient Place Recognition (IEEE T-PAMI 48(3), 2026; arXiv 2502.16601)",
    licence="MIT (Lu-Feng/SelaVPRplusplus LICENSE)",
    protocol=_PROTOCOL + "Pitts30k 94.4, MSLS-val 94.3, Nordland 97.0",
)

# the same pipeline, input, licence and reference; its own size, file and numbers
SELAVPR_PP_BASE_CARD = dataclasses.replace(
    SELAVPR_PP_CARD,
    name="selavpr++-base",
    description="SelaVPR++ (standard VPR) on DINOv2-B/14: 12 MultiConv adapters beside all 12 "
    "blocks, a linear 768 -> 768, GeM, a linear to 2,048, L2.",
    descriptor_dim=2048,
    weights=WeightSource(
        url=_HF + "SelaVPRplusplus_base.pth",
        note="the README's model table (hubconf.py: a file of the same name in the GitHub "
        "release): model_state_dict of a DataParallel model; no sha256 is published",
    ),
    protocol=_PROTOCOL + "Pitts30k 93.3, MSLS-val 94.3, Nordland 94.7",
)


_RERANK = _INPUT + (
    "The two-branch model (hashing and re-ranking): its descriptor is the 512-bit binary code as "
    "+-1 (not unit length; exact L2 search ranks it by Hamming distance, ties by index, as "
    "test_rerank.py's faiss.IndexBinaryFlat(512)); --rerank {reranker} re-ranks the top 100 by the "
    "L2 distance of the float descriptor (test_rerank.py rerank). The README's R@1 (binary + float "
    "re-ranking): "
)
SELAVPR_PP_RERANK_CARD = dataclasses.replace(
    SELAVPR_PP_CARD,
    name="selavpr++-rerank",
    description="SelaVPR++ two-branch (binary codes, float re-ranking) on DINOv2-L/14: a second "
    "MultiConv chain, linear 1024 -> 1024, GeM, linear to 512, sign: 512-bit codes.",
    descriptor_dim=512,
    pipeline_source=_PIPELINE.replace(
        "(hashing and rerank off, aggregation gem)",
        "(hashing and rerank on, aggregation gem), eval_rerank.py, test_rerank.py",
    ),  # fmt: skip
    weights=WeightSource(
        url=_HF + "SelaVPRplusplus_large_rerank.pth",
        note="the README's model table, 'Re-ranking (binary+float)': model_state_dict of a "
        "DataParallel model; no sha256 is published",
    ),
    protocol=_RERANK.format(reranker="selavpr++") + "Pitts30k 94.4, MSLS-val 94.5, Nordland 97.2",
)
SELAVPR_PP_BASE_RERANK_CARD = dataclasses.replace(
    SELAVPR_PP_RERANK_CARD,
    name="selavpr++-base-rerank",
    description="SelaVPR++ two-branch on DINOv2-B/14: 512-bit codes, float re-ranking (2,048-d).",
    weights=WeightSource(
        url=_HF + "SelaVPRplusplus_base_rerank.pth",
        note="the README's model table, 'Re-ranking (binary+float)': model_state_dict of a "
        "DataParallel model; no sha256 is published",
    ),
    protocol=_RERANK.format(reranker="selavpr++-base") + "Pitts30k 93.3, MSLS-val 94.5, "
    "Nordland 94.6",
)


CARDS = {card.name: card for card in (SELAVPR_PP_CARD, SELAVPR_PP_BASE_CARD,
                                      SELAVPR_PP_RERANK_CARD, SELAVPR_PP_BASE_RERANK_CARD)}  # fmt: skip
