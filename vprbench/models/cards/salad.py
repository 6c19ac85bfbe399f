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


CLIQUEMINING_CARD = ModelCard(
    name="cliquemining",
    description="CliqueMining: the SALAD network (DINOv2-B/14 + optimal-transport aggregation, "
    "8,448-d) trained with CliqueMining's hard batches.",
    image_size=(322, 322),
    descriptor_dim=8448,
    dtype="fp16",
    pipeline_source="serizba/cliquemining eval.py:19-30 (T.Resize on the PIL image, bilinear, then "
    "ToTensor, Normalize) with SALAD's README --image_size 322 322 (the CliqueMining README says "
    "to evaluate as SALAD does); eval.py:62 runs under torch.autocast(float16); eval.py:70-87 "
    "builds SALAD (num_clusters 64, cluster_dim 128, token_dim 256, norm_layer True) and loads "
    "torch.load(ckpt)['state_dict']. Commit f7c4e8f",
    weights=WeightSource(
        note="the Lightning checkpoint of the Google Drive link in the CliqueMining README (its "
        "state_dict holds backbone.model.* and aggregator.*, as SALAD's; read with the safe "
        "loader, Lightning's hyper-parameters dropped); pass it as a file"
    ),
    reference="Izquierdo & Civera, Close, But Not There: Boosting Geographic Distance Sensitivity "
    "in Visual Place Recognition (ECCV 2024)",
    licence="GPL-3.0 (serizba/cliquemining LICENSE)",
    protocol="as SALAD: 322x322 PIL bilinear, fp16 autocast; no PCA. The paper reports MSLS-val, "
    "Nordland, Pitts and SPED at 322x322 with the same evaluation code",
)


CARDS = {card.name: card for card in (SALAD_CARD, CLIQUEMINING_CARD)}
