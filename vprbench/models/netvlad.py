"""NetVLAD (Nanne/pytorch-NetVlad: main.py builds the model, netvlad.py the layer) and its
Patch-NetVLAD release with a whitening PCA to 4,096 (QVPR/Patch-NetVLAD: models/models_generic.py).

The model is a VGG-16 cut before its last ReLU and max-pool (``encoder`` = features[:-2], ending at
conv5_3: ``encoder.0`` .. ``encoder.28``), then NetVLAD with 64 clusters over 512-d local features
(``pool.centroids`` [64, 512], ``pool.conv`` 1x1 without bias, as ``vladv2=False``): inputs L2-normalised
over channels, soft assignment, residuals summed per cluster, intra-normalised, flattened (32,768-d) and
L2-normalised. Patch-NetVLAD adds ``WPCA.0``, a 1x1 convolution 32,768 -> 4,096 with bias, then L2.
Images are evaluated at full resolution, 640x480, without resizing.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vprbench.models.common import register_with_weights
from vprbench.models.registry import ModelCard, Release, VPRModel, WeightSource


class NetVLADPool(nn.Module):
    """x: [B, D, H, W] -> [B, K*D], with the parameter names of the official layer."""

    def __init__(self, clusters: int = 64, dim: int = 512) -> None:
        super().__init__()
        self.conv = nn.Conv2d(dim, clusters, kernel_size=1, bias=False)
        self.centroids = nn.Parameter(torch.rand(clusters, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.normalize(x, p=2, dim=1)
        assign = F.softmax(self.conv(x).flatten(2), dim=1)  # [B, K, HW]
        flat = x.flatten(2)  # [B, D, HW]
        # sum_i a_ki (x_i - c_k) = (A X^T)_k - c_k sum_i a_ki
        vlad = assign @ flat.transpose(1, 2) - self.centroids[None] * assign.sum(2, keepdim=True)
        vlad = F.normalize(vlad, p=2, dim=2)  # intra-normalisation
        return F.normalize(vlad.flatten(1), p=2, dim=1)


class NetVLAD(VPRModel):
    """VGG-16 conv5_3 -> NetVLAD-64 (32,768-d), optionally Patch-NetVLAD's WPCA to ``pca_dim``."""

    def __init__(self, pca_dim: int | None = None) -> None:
        super().__init__()
        import torchvision

        features = torchvision.models.vgg16(weights=None).features
        self.encoder = nn.Sequential(*list(features.children())[:-2])
        self.pool = NetVLADPool()
        if pca_dim is not None:
            self.WPCA = nn.Sequential(nn.Conv2d(64 * 512, pca_dim, kernel_size=1))
        self.descriptor_dim = pca_dim or 64 * 512

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        vlad = self.pool(self.encoder(x))
        if hasattr(self, "WPCA"):
            vlad = F.normalize(self.WPCA(vlad[:, :, None, None]).flatten(1), p=2, dim=1)
        return vlad


_PNV_URL = "https://huggingface.co/TobiasRobotics/Patch-NetVLAD/resolve/main/"
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
    protocol="native resolution (the code never resizes), no PCA. The README's 85.2/94.8/97.0 "
    "R@1/5/10 is on Pitts30k val (main.py --mode=test --split=val; README.md:13,20): protocol "
    "pitts30k-val. Not the NetVLAD paper's model: recent tables (VPR-methods-evaluation) use the "
    "MATLAB Pitts30k release with its 4,096-d whitening, which vprbench does not load; netvlad-pca "
    "is Patch-NetVLAD's retrained model, not that whitening",
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
    releases=(
        Release(
            "mapillary",
            "mapillary_WPCA4096.pth.tar",
            ("msls-val", "msls-challenge", "nordland-pnv"),
            url=_PNV_URL + "mapillary_WPCA4096.pth.tar",
            note="trained on MSLS; configs/performance.ini:18's default resumepath. The README "
            "does not say which file goes with which benchmark: this split (Pitts-trained for "
            "Pitts, Mapillary-trained elsewhere) follows the paper",
        ),
        Release(
            "pitts",
            "pitts_WPCA4096.pth.tar",
            ("pitts30k-test",),
            url=_PNV_URL + "pitts_WPCA4096.pth.tar",
            note="trained on Pitts30k; the README's wget and download_models.py:40 save it as "
            "pittsburgh_WPCA4096.pth.tar",
            aliases=("pittsburgh_WPCA4096.pth.tar",),
        ),
    ),  # fmt: skip
    reference="Hausler et al., Patch-NetVLAD (CVPR 2021)",
    licence="MIT",
    protocol="480x640 PIL bilinear; the WPCA layer's 4,096-d descriptor is Patch-NetVLAD's global "
    "retrieval stage, before its patch-level re-ranking (which vprbench does not run): the paper's "
    "numbers include that re-ranking. A model Patch-NetVLAD retrained, not the NetVLAD paper's",
)


register_with_weights(NETVLAD_CARD, NetVLAD)
register_with_weights(NETVLAD_PCA_CARD, lambda: NetVLAD(pca_dim=4096))
