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

from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn

from vprbench.errors import VPRBenchError
from vprbench.models.aggregators import TDDA, GlobalGeM, RegionalGeM
from vprbench.models.common import register_with_weights
from vprbench.models.registry import ModelCard, Release, VPRModel, WeightSource
from vprbench.models.vit import DINOv2ViT, image_grid, init_adapters
from vprbench.models.weights import strict_load

DIM = 768
DRM_LEVELS = (2, 4, 8, 12)  # 1-indexed blocks whose tokens the DRM concatenates
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
    protocol="224x224, the normalised tensor resized without antialiasing (torchvision 0.15); "
    "inference batches of 8 on Pitts30k and 16 elsewhere (paper; Lu-Feng/CricaVPR#2, #7), database "
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


for _name, _cls in (("d2vpr", D2VPR), ("d2vpr-encoder", D2VPR), ("cricavpr", CricaVPR),
                    ("cricavpr-noencoder", CricaVPR)):  # fmt: skip
    register_with_weights(CARDS[_name], _cls)
