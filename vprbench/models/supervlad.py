"""SuperVLAD (Lu-Feng/SuperVLAD: model/network.py SuperVLADModel, model/supervlad_layer.py, eval.py,
util.py resume_model), with the parameter names of the released files (``model_state_dict`` of a
DataParallel model: a ``module.`` prefix, stripped by vprbench's checkpoint reader).

- ``backbone``: DINOv2-B/14 (the DINOv2 code it vendors, ``vit_base(patch_size=14, img_size=518,
  init_values=1, block_chunks=0)``: the hub keys), whose normalised patch tokens
  (``x_norm_patchtokens``: the final norm is applied) form a 768-channel map.
- ``aggregation.conv``: SuperVLAD, a 1x1 conv without bias from the L2-normalised features to 4
  clusters + 1 ghost cluster, softmax over clusters; each cluster sums its softly assigned features
  (no centroids are subtracted, unlike NetVLAD); the ghost cluster is dropped, each cluster is
  L2-normalised, then the whole: 4 x 768 = 3,072-d.
- ``encoder`` (``cross_image_encoder``, on by default as in the README's models): 2 post-norm
  transformer layers (16 heads, feed-forward 2,048, GELU) run with ``batch_first=False`` over the
  [B, 4, 768] descriptors, so each cluster's vectors attend across the images of the inference batch:
  the descriptors depend on which images share a batch (batch size 16 by default, parser.py, database
  then queries, test.py), as CricaVPR's do. Then L2.
- Evaluation input: 322 x 322 (parser.py ``--resize``), ``transforms.functional.resize``'s default
  bilinear, ImageNet mean and std (datasets_ws.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vprbench.models.base import VPRModel
from vprbench.models.cards.supervlad import CLUSTERS, DIM, GHOSTS, SUPERVLAD_CARD
from vprbench.models.common import register_with_weights
from vprbench.models.vit import DINOv2ViT, image_grid


class SuperVLADLayer(nn.Module):
    def __init__(self, clusters: int = CLUSTERS, ghosts: int = GHOSTS, dim: int = DIM) -> None:
        super().__init__()
        self.clusters = clusters
        self.conv = nn.Conv2d(dim, clusters + ghosts, kernel_size=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.normalize(x, dim=1)
        assign = torch.softmax(self.conv(x).flatten(2), dim=1)  # [B, K + G, N]
        vlad = torch.einsum("bkn,bdn->bkd", assign[:, : self.clusters], x.flatten(2))
        return F.normalize(F.normalize(vlad, dim=2).flatten(1), dim=1)


class SuperVLAD(VPRModel):
    def __init__(self, cross_image_encoder: bool = True) -> None:
        super().__init__()
        self.backbone = DINOv2ViT("vitb14")
        self.aggregation = SuperVLADLayer()
        self.encoder = None
        if cross_image_encoder:
            layer = nn.TransformerEncoderLayer(d_model=DIM, nhead=16, dim_feedforward=2048,
                                               activation="gelu", dropout=0.1)  # fmt: skip
            self.encoder = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)
        self.batch_dependent = cross_image_encoder
        self.descriptor_dim = CLUSTERS * DIM

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (tokens,), grid = self.backbone(x)
        out = self.aggregation(image_grid(self.backbone.norm(tokens), grid))
        if self.encoder is not None:
            # sequence = the images of the batch, batch = the 4 clusters (batch_first=False)
            out = self.encoder(out.view(x.shape[0], CLUSTERS, DIM)).reshape(x.shape[0], -1)
        return F.normalize(out, dim=-1)


register_with_weights(SUPERVLAD_CARD, SuperVLAD)
