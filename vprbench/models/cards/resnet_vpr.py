"""Cards of the ResNet-50 models: CosPlace, EigenPlaces and MixVPR.

No torch here: `vprbench models list|info` and argument checks read the cards without importing
the model code."""

from __future__ import annotations

from vprbench.models.card import ModelCard, WeightSource


def _release(repo: str, method: str) -> str:
    return (
        f"https://github.com/gmberton/{repo}/releases/download/v1.0/ResNet50_{{dim}}_{method}.pth"
    )


PLACES_CARDS = {
    "cosplace": (
        (32, 64, 128, 256, 512, 1024, 2048),
        _release("CosPlace", "cosplace"),
        "Berton et al., Rethinking Visual Geo-localization for Large-Scale Applications (CVPR 2022)",
        "test images at native resolution (datasets/test_dataset.py:40-48: --resize_test_imgs, "
        "parser.py:38, is off by default and eval.py:40-41 does not pass it; it would resize the "
        "shorter side to 512), queries at batch 1 (test.py:35-36); "
        "no PCA. MSLS: msls-val-full, VDD's val with every non-panorama query (the author evaluates "
        "on VDD folders: amaralibey/MixVPR#5, gmberton/VPR-datasets-downloader#18, #21)",
    ),
    "eigenplaces": (
        (128, 256, 512, 1024, 2048),
        _release("EigenPlaces", "eigenplaces"),
        "Berton et al., EigenPlaces (ICCV 2023)",
        "test images at native resolution, never resized (datasets/test_dataset.py:51-54: "
        "ToTensor and Normalize only), queries at batch 1 (test.py:17,33-36 as eval.py:46 calls "
        "it); no PCA. MSLS: "
        "msls-val-full, as CosPlace",
    ),
}


def _places_card(
    name: str, dims: tuple[int, ...], url: str, reference: str, protocol: str
) -> ModelCard:
    """CosPlace or EigenPlaces: one card, the descriptor size chosen by --set dim."""
    return ModelCard(
        name=name,
        description=f"{dict(cosplace='CosPlace', eigenplaces='EigenPlaces')[name]}: ResNet-50, GeM, fully connected to dim (--set dim=512).",
        image_size=(480, 640),  # only the size to profile at: Pitts30k's native size
        descriptor_dim=2048,
        native_resolution=True,
        pipeline_source=f"gmberton/{dict(cosplace='CosPlace', eigenplaces='EigenPlaces')[name]} "
        "datasets/test_dataset.py (ToTensor, Normalize, no resize) and test.py (database at "
        "--infer_batch_size, queries at 1); file and lines in the card's protocol",
        weights=WeightSource(
            url=url.format(dim=2048),
            note=f"official: {url} for the chosen dim; no published sha256",
        ),  # fmt: skip
        options={"dim": 2048},
        option_dims={"dim": {dim: dim for dim in dims}},
        option_urls={"dim": {dim: url.format(dim=dim) for dim in dims}},
        reference=reference,
        licence="MIT",
        protocol=protocol,
    )


MIXVPR_CARD = ModelCard(
    name="mixvpr",
    description="MixVPR: ResNet-50 to layer3, 4 feature mixers, 1024 channels x 4 rows (4,096-d).",
    image_size=(320, 320),
    descriptor_dim=4096,
    interpolation="bilinear",
    dtype="fp16",
    pipeline_source="amaralibey/MixVPR dataloaders/GSVCitiesDataloader.py:82-85 (valid_transform: "
    "T.Resize(image_size, interpolation=BILINEAR) on the PIL image, ToTensor, Normalize), given "
    "to every validation set at :111-117; main.py:235-238 (320x320) and :309 (precision=16). "
    "demo.py's bicubic load_image computes no recall",
    weights=WeightSource(
        note="resnet50_MixVPR_4096_channels(1024)_rows(4).ckpt from the Google Drive link in the "
        "MixVPR README (a bare state dict); pass it as a file"
    ),
    reference="Ali-bey et al., MixVPR (WACV 2023)",
    licence="none stated: amaralibey/MixVPR has no LICENSE file and its README states none "
    "(commit 4043915); ask the authors before redistributing its code or weights",
    protocol="320x320 PIL bilinear (the validation path of the published recalls), fp16; no PCA",
)


CARDS = {
    **{name: _places_card(name, dims, url, ref, protocol)
       for name, (dims, url, ref, protocol) in PLACES_CARDS.items()},
    "mixvpr": MIXVPR_CARD,
}  # fmt: skip
