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

from vprbench.models.base import VPRModel
from vprbench.models.cards.netvlad import NETVLAD_CARD, NETVLAD_PCA_CARD
from vprbench.models.common import register_with_weights


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


register_with_weights(NETVLAD_CARD, NetVLAD)
register_with_weights(NETVLAD_PCA_CARD, lambda: NetVLAD(pca_dim=4096))
