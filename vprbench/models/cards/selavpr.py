"""Card of SelaVPR (its global branch).

No torch here: `vprbench models list|info` and argument checks read the cards without importing
the model code."""

from __future__ import annotations

from vprbench.models.card import ModelCard, Release, WeightSource

SELAVPR_CARD = ModelCard(
    name="selavpr",
    description="SelaVPR global branch: DINOv2-L/14 with serial and parallel adapters, GeM (1,024-d); "
    "357,428,609 parameters, of which 2,654,592 in the unused local branch.",
    image_size=(224, 224),
    descriptor_dim=1024,
    resize="normalised",
    antialias=False,
    pipeline_source="Lu-Feng/SelaVPR datasets_ws.py:20-23 (base_transform: ToTensor, Normalize) "
    "then :108-112 (transforms.functional.resize of the normalised tensor, no antialias "
    "argument); requirements.txt:3 pins torchvision==0.15.0 (antialias=False for tensors)",
    weights=WeightSource(
        note="SelaVPR_msls.pth or SelaVPR_pitts30k.pth from the Google Drive links in the SelaVPR "
        "README; pass it as a file"
    ),
    releases=(
        Release(
            "msls",
            "SelaVPR_msls.pth",
            ("msls-val", "st-lucia"),
            note="README: fine-tuned on MSLS, reported on MSLS-val, Nordland-test, St Lucia. Its "
            "Nordland-test (README.md:176, the downsampled set of webdiis.unizar.es/~jmfacil/"
            "pr-nordland) is 3,450 database images and queries at +/-2 frames (the author in "
            "Lu-Feng/SelaVPR#6), not Nordland** (nordland-pnv): vprbench does not register it",
        ),
        Release(
            "pitts30k",
            "SelaVPR_pitts30k.pth",
            ("pitts30k-test", "pitts250k-test", "tokyo247"),
            note="README: further fine-tuned on Pitts30k, reported on Tokyo24/7, Pitts30k, "
            "Pitts250k",
        ),
    ),  # fmt: skip
    reference="Lu et al., Towards Seamless Adaptation of Pre-trained Models for Visual Place "
    "Recognition (ICLR 2024)",
    licence="MIT",
    protocol="224x224 (parser.py --resize); the paper's numbers re-rank the global top-100 with the "
    "local features (parser.py --rerank_num 100): `evaluate --rerank selavpr` does it, and without "
    "it the recall is the global stage's",
)


CARDS = {SELAVPR_CARD.name: SELAVPR_CARD}
