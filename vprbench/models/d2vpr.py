"""CricaVPR (teacher) and D²-VPR (student), with the switches the ablations toggle.

Module layout follows the official repositories so that released checkpoints load with strict keys
through a short, documented key map (:func:`map_official_keys`):

    official (tony19980810/D2VPR, Lu-Feng/CricaVPR)   ->  vprbench
    backbone.lin.*, backbone.up_norm.*                ->  drm.lin.*, drm.up_norm.*
    aggregation.*, offset_generator.*,
    topdown_fusion.*, pos_encoder.*                   ->  aggregator.<same>
    everything else (backbone.*, encoder.*)           ->  unchanged

A bare DINOv2 file (``dinov2_vit{s,b}14_pretrain.pth``) given as weights initialises the backbone only,
as both official training scripts do (the student drops DINOv2's final ``norm``, which it replaces
by the DRM's LayerNorm); adapters then start from their official initialisation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vprbench.errors import VPRBenchError
from vprbench.models.aggregators import TDDA, GlobalGeM, RegionalGeM
from vprbench.models.base import VPRModel
from vprbench.models.cards.d2vpr import CARDS, DIM, DRM_LEVELS
from vprbench.models.common import register_with_weights
from vprbench.models.vit import DINOv2ViT, image_grid, init_adapters
from vprbench.models.weights import strict_load

AGGREGATORS = {"tdda": TDDA, "regional-gem": RegionalGeM, "gem": GlobalGeM}
_TOP_LEVEL_AGGREGATOR_KEYS = (
    "aggregation.",
    "offset_generator.",
    "topdown_fusion.",
    "pos_encoder.",
)


def cross_image_encoder() -> nn.TransformerEncoder:
    """CricaVPR's 2-layer encoder. batch_first=False on [B, T, D] input makes attention run across
    the B images of a batch (the T tokens play the batch): descriptors depend on batch membership."""
    layer = nn.TransformerEncoderLayer(
        d_model=DIM,
        nhead=16,
        dim_feedforward=2048,
        activation="gelu",
        dropout=0.1,
        batch_first=False,
    )
    return nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)


class DRM(nn.Module):
    """Distillation Recovery Module: tokens after blocks 2, 4, 8, 12 of the 384-d student,
    concatenated (1,536), Linear to the teacher's 768, LayerNorm. With ``levels=(12,)`` (the ``drm=off``
    ablation) only the last block's tokens are projected, 384 -> 768, and normed."""

    def __init__(self, in_dim: int, levels: tuple[int, ...]) -> None:
        super().__init__()
        self.levels = levels
        self.lin = nn.Linear(in_dim * len(levels), DIM)
        self.up_norm = nn.LayerNorm(DIM, eps=1e-6)

    def forward(self, tokens: list[torch.Tensor]) -> torch.Tensor:
        return self.up_norm(self.lin(torch.cat(tokens, dim=-1)))


def drm_block_levels(drm: bool, levels) -> tuple[int, ...]:
    """The 1-indexed ViT-S blocks the DRM reads: ``levels`` (default 2, 4, 8, 12, as released), or
    only the last block when ``drm`` is off (the ablation's baseline)."""
    levels = tuple(int(v) for v in levels)
    if not levels or sorted(set(levels)) != list(levels) or not all(1 <= v <= 12 for v in levels):
        raise VPRBenchError(
            f"drm_levels must be increasing block numbers between 1 and 12, got {list(levels)}"
        )
    if not drm:
        if levels != DRM_LEVELS:
            raise VPRBenchError("drm=false reads only block 12; drop drm_levels or set drm=true")
        return (12,)
    return levels


def map_official_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official D²-VPR / CricaVPR keys -> vprbench keys (the table in the module docstring)."""
    out = {}
    for key, value in state.items():
        if key.startswith(("backbone.lin.", "backbone.up_norm.")):
            key = "drm." + key[len("backbone.") :]
        elif key.startswith(_TOP_LEVEL_AGGREGATOR_KEYS):
            key = "aggregator." + key
        out[key] = value
    return out


class RegionalVPRModel(VPRModel):
    """Shared skeleton: DINOv2 backbone -> 768-d tokens -> aggregator -> optional cross-image
    encoder -> flatten -> L2. Subclasses define :meth:`tokens`."""

    def __init__(self, aggregator: str, tdda_guidance: bool, encoder: bool) -> None:
        super().__init__()
        if aggregator not in AGGREGATORS:
            raise VPRBenchError(
                f"aggregator must be one of {sorted(AGGREGATORS)}, got {aggregator!r}"
            )
        self.aggregator = (
            TDDA(DIM, tdda_guidance) if aggregator == "tdda" else AGGREGATORS[aggregator]()
        )
        self.encoder = cross_image_encoder() if encoder else None
        self.batch_dependent = encoder
        self.descriptor_dim = DIM * (1 if aggregator == "gem" else 14)  # = OPTION_DIMS

    def tokens(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Global token [B, 768] and patch map [B, 768, R, C]."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cls, patches = self.tokens(x)
        tokens = self.aggregator(cls, patches)
        if self.encoder is not None:
            tokens = self.encoder(tokens)
        return F.normalize(tokens.reshape(x.shape[0], -1), p=2, dim=-1)

    def map_state_dict(self, state):
        return map_official_keys(state)

    def load_checkpoint(self, state: dict[str, torch.Tensor], source: str) -> str:
        if "blocks.0.attn.qkv.weight" in state and "cls_token" in state:
            self.load_dinov2(state, source)
            return "backbone-init"
        strict_load(self, self.map_state_dict(state), source)
        return "full"

    def load_dinov2(self, state: dict[str, torch.Tensor], source: str) -> None:
        """Initialise the backbone from official DINOv2 pre-training weights: every backbone key but
        the adapters' must be present, every file key must be used (the student's dropped ``norm``
        excepted)."""
        backbone = self.backbone
        own = {k for k in backbone.state_dict() if ".adapter." not in k}
        if backbone.norm is None:
            state = {k: v for k, v in state.items() if not k.startswith("norm.")}
        full = dict(backbone.state_dict())
        full.update(state)
        missing = sorted(own - set(state))
        unexpected = sorted(set(state) - set(full))
        if missing or unexpected:
            raise VPRBenchError(
                f"{source}: not a DINOv2 backbone for this model: missing {missing[:4]}, "
                f"unexpected {unexpected[:4]}"
            )
        strict_load(backbone, full, source)


class CricaVPR(RegionalVPRModel):
    """CricaVPR: DINOv2 ViT-B/14 with adapters, final norm, regional GeM, cross-image encoder."""

    def __init__(
        self, adapters=True, aggregator="regional-gem", tdda_guidance=True, cross_image_encoder=True
    ):
        super().__init__(aggregator, tdda_guidance, cross_image_encoder)
        self.backbone = DINOv2ViT("vitb14", adapters=adapters, final_norm=True)
        init_adapters(self.backbone)
        # CricaVPR trains only the adapters inside its backbone (official train.py).
        for name, param in self.backbone.named_parameters():
            param.requires_grad_(".adapter." in name)

    def tokens(self, x):
        (last,), grid = self.backbone(x)
        normed = self.backbone.norm(last)
        return normed[:, 0], image_grid(normed, grid)


class D2VPR(RegionalVPRModel):
    """D²-VPR: DINOv2 ViT-S/14 with half-width adapters, DRM to 768-d tokens, TDDA; the cross-image
    encoder is optional (``d2vpr-encoder``)."""

    def __init__(
        self,
        adapters=True,
        drm=True,
        aggregator="tdda",
        tdda_guidance=True,
        cross_image_encoder=False,
        drm_levels=DRM_LEVELS,
    ):
        super().__init__(aggregator, tdda_guidance, cross_image_encoder)
        self.backbone = DINOv2ViT("vits14", adapters=adapters, final_norm=False)
        init_adapters(self.backbone)
        self.drm = DRM(self.backbone.embed_dim, drm_block_levels(drm, drm_levels))

    def tokens(self, x):
        outputs, grid = self.backbone(x, take=self.drm.levels)
        normed = self.drm(outputs)
        return normed[:, 0], image_grid(normed, grid)


for _name, _cls in (("d2vpr", D2VPR), ("d2vpr-encoder", D2VPR), ("cricavpr", CricaVPR),
                    ("cricavpr-noencoder", CricaVPR)):  # fmt: skip
    register_with_weights(CARDS[_name], _cls)
