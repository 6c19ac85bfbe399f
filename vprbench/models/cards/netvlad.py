"""Cards of NetVLAD (pytorch-NetVlad) and Patch-NetVLAD's WPCA global descriptor.

No torch here: `vprbench models list|info` and argument checks read the cards without importing
the model code."""

from __future__ import annotations

from vprbench.models.card import ModelCard, Release, WeightSource

_PNV_URL = "https://huggingface.co/TobiasRobotics/Patch-NetVLAD/resolve/main/"


def _wpca_releases(pcs: int, pitts_benchmarks: tuple[str, ...] = ("pitts30k-test",),
                   mapillary_benchmarks: tuple[str, ...] = ("msls-val", "msls-challenge",
                                                            "nordland-pnv")) -> tuple:  # fmt: skip
    """The Mapillary- and Pittsburgh-trained files with a ``pcs``-d WPCA (download_models.py)."""
    return (
        Release(
            "mapillary",
            f"mapillary_WPCA{pcs}.pth.tar",
            mapillary_benchmarks,
            url=_PNV_URL + f"mapillary_WPCA{pcs}.pth.tar",
            note="trained on MSLS; the configs' resumepath (./pretrained_models/mapillary_WPCA + "
            "num_pcs). The README does not say which file goes with which benchmark: this split "
            "(Pitts-trained for Pitts, Mapillary-trained elsewhere) follows the paper",
        ),
        Release(
            "pitts",
            f"pitts_WPCA{pcs}.pth.tar",
            pitts_benchmarks,
            url=_PNV_URL + f"pitts_WPCA{pcs}.pth.tar",
            note=f"trained on Pitts30k; the README's wget and download_models.py save it as "
            f"pittsburgh_WPCA{pcs}.pth.tar",
            aliases=(f"pittsburgh_WPCA{pcs}.pth.tar",),
        ),
    )


NETVLAD_CARD = ModelCard(
    name="netvlad",
    description="NetVLAD: VGG-16 conv5_3 + NetVLAD with 64 clusters (32,768-d), images at their own size.",
    image_size=(480, 640),  # only the size to profile at: Pittsburgh's native size
    descriptor_dim=32_768,
    native_resolution=True,
    pipeline_source="Nanne/pytorch-NetVlad pittsburgh.py:22-27 input_transform (ToTensor, "
    "Normalize; no resize), main.py:353-366",
    weights=WeightSource(
        note="the Pittsburgh checkpoint of Nanne/pytorch-NetVlad (a dict with state_dict, epoch, "
        "recalls, best_score, optimizer; its README links it); pass it as a file"
    ),
    reference="Arandjelovic et al., NetVLAD (CVPR 2016); Nanne/pytorch-NetVlad port",
    licence="none stated: Nanne/pytorch-NetVlad has no LICENSE file (commit def998e); ask the "
    "author before redistributing its checkpoint",
    protocol="native resolution (the code never resizes), no PCA. The README's 85.2/94.8/97.0 "
    "R@1/5/10 is on Pitts30k val (main.py --mode=test --split=val; README.md:13,20): protocol "
    "pitts30k-val. Not the NetVLAD paper's model: recent tables (VPR-methods-evaluation) use the "
    "MATLAB Pitts30k release with its 4,096-d whitening, which vprbench does not load; netvlad-pca "
    "is Patch-NetVLAD's retrained model, not that whitening",
)


def _wpca_card(pcs: int, config: str, reranker: str) -> ModelCard:
    """Patch-NetVLAD's global descriptor with a smaller WPCA, as its ``config`` uses it."""
    return ModelCard(
        name=f"netvlad-pca{pcs}",
        description=f"Patch-NetVLAD's global descriptor with WPCA to {pcs} (configs/{config}), "
        "images resized to 480x640.",
        image_size=(480, 640),
        descriptor_dim=pcs,
        pipeline_source=NETVLAD_PCA_CARD.pipeline_source.replace("performance.ini", config),
        weights=WeightSource(
            note=f"Patch-NetVLAD's pitts_WPCA{pcs}.pth.tar or mapillary_WPCA{pcs}.pth.tar "
            f"(download_models.py): --weights official:pitts or official:mapillary"
        ),
        releases=_wpca_releases(pcs),
        reference=NETVLAD_PCA_CARD.reference,
        licence=NETVLAD_PCA_CARD.licence,
        protocol=f"480x640 PIL bilinear; configs/{config}'s global stage (num_pcs = {pcs}), "
        f"before its patch re-ranking (--rerank {reranker})",
    )


NETVLAD_PCA_CARD = ModelCard(
    name="netvlad-pca",
    description="Patch-NetVLAD's global descriptor: NetVLAD-64 + WPCA to 4,096, images resized to 480x640.",
    image_size=(480, 640),
    descriptor_dim=4096,
    pipeline_source="QVPR/Patch-NetVLAD patchnetvlad/tools/datasets.py:39-46 (T.Resize((480, 640)) "
    "on the PIL image, bilinear; configs/performance.ini imageresizeh/w)",
    weights=WeightSource(
        note="Patch-NetVLAD's pitts_WPCA4096.pth.tar or mapillary_WPCA4096.pth.tar (a dict with "
        "num_pcs and state_dict; README.md:72-77): --weights official:pitts or official:mapillary"
    ),
    releases=_wpca_releases(4096),
    reference="Hausler et al., Patch-NetVLAD (CVPR 2021)",
    licence="MIT (the code: QVPR/Patch-NetVLAD LICENSE; the README states no licence for the "
    "weights)",
    protocol="480x640 PIL bilinear; the WPCA layer's 4,096-d descriptor is Patch-NetVLAD's global "
    "retrieval stage, before its patch-level re-ranking (--rerank patchnetvlad: "
    "configs/performance.ini): the paper's numbers include that re-ranking. A model "
    "Patch-NetVLAD retrained, not the NetVLAD paper's",
)


NETVLAD_PCA512_CARD = _wpca_card(512, "speed.ini", "patchnetvlad-speed")
NETVLAD_PCA128_CARD = _wpca_card(128, "storage.ini", "patchnetvlad-storage")


CARDS = {card.name: card for card in (NETVLAD_CARD, NETVLAD_PCA_CARD, NETVLAD_PCA512_CARD,
                                      NETVLAD_PCA128_CARD)}  # fmt: skip
