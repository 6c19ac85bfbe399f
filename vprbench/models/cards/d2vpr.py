"""Cards of D²-VPR (with and without the cross-image encoder) and CricaVPR, its teacher.

No torch here: `vprbench models list|info` and argument checks read the cards without importing
the model code."""

from __future__ import annotations

from dataclasses import replace

from vprbench.models.card import ModelCard, Release, WeightSource

DIM = 768


DRM_LEVELS = (2, 4, 8, 12)  # 1-indexed blocks whose tokens the DRM concatenates


D2VPR_WEIGHTS = WeightSource(
    note=(
        "Released by the authors (tony19980810/D2VPR, Google Drive links in its README): "
        "finetune_no_encoder.pth (d2vpr), distillation.pth and finetune.pth (d2vpr-encoder). "
        "Or dinov2_vits14_pretrain.pth to initialise the backbone only. Pass --weights FILE."
    ),
)


CRICAVPR_WEIGHTS = WeightSource(
    url="https://github.com/Lu-Feng/CricaVPR/releases/download/v1.0/CricaVPR.pth",
    note="No checksum is published with the release; vprbench records the file's sha256 in every run.",
)


# Both evaluations normalise, then resize the float tensor with transforms.functional.resize and no
# antialias argument, which means antialias=False for tensors before torchvision 0.17 and True from it.
D2VPR_PIPELINE = (
    "tony19980810/D2VPR datasets_ws.py:17-20 (base_transform: ToTensor, Normalize) then :60 and "
    ":105-109 (transforms.functional.resize of the normalised tensor, no antialias argument); "
    "requirements.txt:7 pins torchvision==0.18.0, where that default is antialias=True"
)


CRICAVPR_PIPELINE = (
    "Lu-Feng/CricaVPR datasets_ws.py:18-21 (base_transform: ToTensor, Normalize) then :105-109 "
    "(transforms.functional.resize of the normalised tensor, no antialias argument); "
    "requirements.txt:3 pins torchvision==0.15.0, where that default is antialias=False for tensors"
)


D2VPR_RELEASES = {
    "d2vpr": (
        Release("finetune_no_encoder", "finetune_no_encoder.pth",
                ("pitts30k-test", "msls-val", "sped", "pitts250k-test", "amstertime",
                 "nordland-pnv"),
                note="Google Drive link in the D2VPR README; the name eval_no_encoder.py:44 loads"),
    ),
    "d2vpr-encoder": (
        Release("distillation", "distillation.pth",
                ("pitts30k-test", "sped", "amstertime", "pitts250k-test"),
                note="Google Drive link in the D2VPR README; eval_encoder.py:49-69 loads it for "
                "these benchmarks"),
        Release("finetune", "finetune.pth", ("msls-val", "nordland-pnv"),
                note="Google Drive link in the D2VPR README; eval_encoder.py:49-69 loads it for "
                "these benchmarks"),
    ),
}  # fmt: skip


# The descriptor size by aggregator (global GeM: 768; TDDA and regional GeM: 14 x 768)
OPTION_DIMS = {"aggregator": {"gem": DIM, "tdda": 14 * DIM, "regional-gem": 14 * DIM}}


D2VPR_CARD = ModelCard(
    name="d2vpr",
    description="D²-VPR student: DINOv2 ViT-S/14 + adapters, DRM, TDDA; no cross-image encoder.",
    image_size=(224, 224),
    descriptor_dim=14 * DIM,
    option_dims=OPTION_DIMS,
    resize="normalised",
    antialias=True,
    pca_dim=4096,
    pipeline_source=D2VPR_PIPELINE,
    weights=D2VPR_WEIGHTS,
    releases=D2VPR_RELEASES["d2vpr"],
    batch_convention="d2vpr",
    options={"adapters": True, "drm": True, "aggregator": "tdda", "tdda_guidance": True,
             "cross_image_encoder": False, "drm_levels": list(DRM_LEVELS)},
    reference="Zhang et al., D²-VPR (AAAI 2026, arXiv 2511.12528)",
    licence="none stated: tony19980810/D2VPR has no LICENSE file (commit 33042fa); ask the "
    "authors before redistributing its code or weights. Its only licence file, backbone/LICENSE "
    "(Apache-2.0), covers the DINOv2 code it copies",
    protocol="224x224, the normalised tensor resized with antialiasing (torchvision 0.18); "
    "per-dataset inference batch sizes of eval_encoder.py:46-69 for the encoder variant; PCA to "
    "4,096 (eval_no_encoder.py:45, eval_encoder.py:71 set args.pca_dim=4096), fitted by "
    "util.py:59-75 on up to 16,384 shuffled images of pitts30k/images (parser.py:47: all three "
    "splits): --pca 4096 --pca-fit pitts30k-test is the nearest vprbench fit, and the record says "
    "how it differs",
)  # fmt: skip


CRICAVPR_CARD = ModelCard(
    name="cricavpr",
    description="CricaVPR: DINOv2 ViT-B/14 + adapters, regional GeM, cross-image encoder (batch-dependent).",
    image_size=(224, 224),
    descriptor_dim=14 * DIM,
    option_dims=OPTION_DIMS,
    resize="normalised",
    antialias=False,
    pipeline_source=CRICAVPR_PIPELINE,
    batch_dependent=True,
    batch_convention="cricavpr",
    weights=CRICAVPR_WEIGHTS,
    releases=(
        Release("cricavpr", "CricaVPR.pth", ("pitts30k-test", "pitts250k-test", "msls-val"),
                url=CRICAVPR_WEIGHTS.url, note="GitHub release v1.0 (also --weights official)"),
    ),
    options={"adapters": True, "aggregator": "regional-gem", "tdda_guidance": True,
             "cross_image_encoder": True},
    reference="Lu et al., CricaVPR (CVPR 2024)",
    licence="MIT (Lu-Feng/CricaVPR LICENSE)",
    protocol="224x224, the normalised tensor resized without antialiasing (torchvision 0.15); "
    "inference batches of 8 on Pitts30k and Pitts250k (the author, Lu-Feng/CricaVPR#2; the paper, "
    "quoted in #7, names Pitts30K only) and 16 elsewhere, database "
    "then queries in VDD order; the 10,752-d descriptor, or PCA to 4,096 fitted on up to 16,384 "
    "random images of pitts30k/images/train (README.md:46, util.py:53-66: sklearn PCA in shuffled "
    "batches of 16). vprbench cannot fit on that train split (no pitts30k-train protocol): its "
    "--pca-fit takes a registered protocol, and the record says which was used",
)  # fmt: skip


def _with_encoder(card: ModelCard, name: str, encoder: bool, description: str) -> ModelCard:
    """The same model with the cross-image encoder switched, registered under its own name."""
    options = {**card.options, "cross_image_encoder": encoder}
    if card is D2VPR_CARD:
        releases = D2VPR_RELEASES.get(name, ())
    else:  # CricaVPR.pth holds the encoder: no release of the variant without it
        releases = card.releases if encoder else ()
    return replace(
        card, name=name, description=description, options=options, batch_dependent=encoder,
        releases=releases,
    )  # fmt: skip


CARDS = {
    "d2vpr": D2VPR_CARD,
    "d2vpr-encoder": _with_encoder(
        D2VPR_CARD,
        "d2vpr-encoder",
        True,
        "D²-VPR with CricaVPR's cross-image encoder (batch-dependent).",
    ),
    "cricavpr": CRICAVPR_CARD,
    "cricavpr-noencoder": _with_encoder(
        CRICAVPR_CARD, "cricavpr-noencoder", False, "CricaVPR without its cross-image encoder."
    ),
}
