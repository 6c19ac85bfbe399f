"""NetVLAD (Nanne/pytorch-NetVlad: main.py builds the model, netvlad.py the layer) and its
Patch-NetVLAD release with a whitening PCA to 4,096 (QVPR/Patch-NetVLAD: models/models_generic.py).

The model is a VGG-16 cut before its last ReLU and max-pool (``encoder`` = features[:-2], ending at
conv5_3: ``encoder.0`` .. ``encoder.28``), then NetVLAD with 64 clusters over 512-d local features
(``pool.centroids`` [64, 512], ``pool.conv`` 1x1 without bias, as ``vladv2=False``): inputs L2-normalised
over channels, soft assignment, residuals summed per cluster, intra-normalised, flattened (32,768-d) and
L2-normalised. Patch-NetVLAD adds ``WPCA.0``, a 1x1 convolution 32,768 -> 4,096 (512, 128 in its
speed and storage configs) with bias, then L2. NetVLAD's images are evaluated at their own size;
Patch-NetVLAD resizes them to 480x640.

``local_features`` are Patch-NetVLAD's patch descriptors (patchnetvlad/models/patchnetvlad.py
``PatchNetVLAD.forward``; feature_extract.py:79, 88-90 for the WPCA): the per-cluster residuals
a_k(x) (x - c_k) of every conv5_3 position, summed over each p x p patch (stride s) through an integral
image, divided by p^2, intra-normalised per cluster, L2-normalised, then WPCA'd and L2-normalised
like the global descriptor, for each patch size in turn.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vprbench.errors import VPRBenchError
from vprbench.models.base import VPRModel
from vprbench.models.cards.netvlad import (
    NETVLAD_CARD,
    NETVLAD_PCA128_CARD,
    NETVLAD_PCA512_CARD,
    NETVLAD_PCA_CARD,
)
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

    def _wpca(self, vlad: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.WPCA(vlad[:, :, None, None]).flatten(1), p=2, dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        vlad = self.pool(self.encoder(x))
        return self._wpca(vlad) if hasattr(self, "WPCA") else vlad

    def local_features(
        self, x: torch.Tensor, patch_sizes: tuple[int, ...], strides: tuple[int, ...]
    ) -> torch.Tensor:
        """[B, P, pca_dim]: the WPCA'd patch descriptors of each patch size in turn (P = the sum over
        sizes p, strides s of ((H - p) // s + 1) * ((W - p) // s + 1) for the H x W conv5_3 map,
        row-major as the official ``view(N, K, C, -1)`` flattens them)."""
        if not hasattr(self, "WPCA"):
            raise VPRBenchError(
                "Patch-NetVLAD's patch descriptors need the WPCA layer (netvlad-pca*)"
            )
        feats = F.normalize(self.encoder(x), p=2, dim=1)
        n, c, h, w = feats.shape
        k = self.pool.centroids.shape[0]
        if any(p > min(h, w) for p in patch_sizes):
            raise VPRBenchError(
                f"patch sizes {patch_sizes} exceed the {h} x {w} feature map of a "
                f"{tuple(x.shape[-2:])} image"
            )
        assign = F.softmax(self.pool.conv(feats), dim=1)  # [N, K, H, W]
        residual = (feats[:, None] - self.pool.centroids[None, :, :, None, None]) * assign[
            :, :, None
        ]
        integral = F.pad(residual.reshape(n, k * c, h, w).cumsum(-1).cumsum(-2), (1, 0, 1, 0))
        corners = torch.ones(k * c, 1, 2, 2, dtype=integral.dtype, device=integral.device)
        corners[:, :, 0, -1] = -1
        corners[:, :, -1, 0] = -1
        out = []
        for size, stride in zip(patch_sizes, strides, strict=True):
            regions = F.conv2d(integral, corners, stride=stride, groups=k * c, dilation=size)
            vlad = F.normalize((regions / size**2).reshape(n, k, c, -1), p=2, dim=2)
            vlad = F.normalize(vlad.reshape(n, k * c, -1), p=2, dim=1)  # [N, K*C, P]
            patches = vlad.permute(2, 0, 1).reshape(-1, k * c)  # [P*N, K*C], as the official
            out.append(self._wpca(patches).reshape(-1, n, self.descriptor_dim).permute(1, 0, 2))
        return torch.cat(out, dim=1)


register_with_weights(NETVLAD_CARD, NetVLAD)
register_with_weights(NETVLAD_PCA_CARD, lambda: NetVLAD(pca_dim=4096))
register_with_weights(NETVLAD_PCA512_CARD, lambda: NetVLAD(pca_dim=512))
register_with_weights(NETVLAD_PCA128_CARD, lambda: NetVLAD(pca_dim=128))
