"""Helpers that every model builder uses: loading weights and recording where they came from."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from vprbench.errors import RandomInitWarning, VPRBenchError  # noqa: F401  (re-exported)
from vprbench.models.base import VPRModel
from vprbench.models.card import ModelCard, WeightsInfo, weights_target
from vprbench.models.weights import read_checkpoint, resolve_weights, sha256_file


def load_weights(
    model: VPRModel,
    spec: str | None,
    card: ModelCard,
    cache_dir: Path | None,
    official_url: str | None = None,
) -> VPRModel:
    """Load ``spec`` into ``model`` with strict keys (after the model's key map), or mark it random.

    ``spec`` is a file, a URL, or ``official`` (``official_url``, else the card's URL and sha256).
    """
    if spec is None:
        warnings.warn(
            f"model '{card.name}' runs at RANDOM INIT: no weights given (use --weights)",
            RandomInitWarning,
            stacklevel=3,
        )
        model.weights_info = WeightsInfo(source=None, sha256=None, random_init=True)
        return model
    spec, sha256, release = weights_target(card, spec, official_url)
    path = resolve_weights(spec, cache_dir, sha256)
    if release is None:  # a file of a release is known by its official name
        release = next((r for r in card.releases if r.named(_basename(spec))), None)
    state, meta = read_checkpoint(path, with_meta=True)
    kind = model.load_checkpoint(state, str(path))
    model.checkpoint_meta = meta  # a `vprbench train` checkpoint names its model and options
    model.weights_info = WeightsInfo(
        source=str(spec), sha256=sha256_file(path), random_init=False, kind=kind,
        release=release.name if release else None,
    )  # fmt: skip
    if kind != "full":
        warnings.warn(
            f"model '{card.name}': only the backbone was initialised from {path.name}; the rest is "
            "untrained",
            RandomInitWarning,
            stacklevel=3,
        )
    return model


def _basename(spec: str) -> str:
    """The file name of a path or URL."""
    from urllib.parse import urlparse

    return Path(urlparse(spec).path if "://" in spec else spec).name


def register_with_weights(card: ModelCard, make) -> None:
    """Register ``card`` with the usual builder: ``make(**options)`` builds the model, then
    :func:`load_weights` loads ``--weights`` into it (or marks it random)."""
    from vprbench.models.registry import register_model

    @register_model(card)
    def build(options, weights, cache_dir):
        return load_weights(make(**options), weights, card, cache_dir)


def backbone_with_gem(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Key map of the backbone + GeM baselines: a released backbone file (no ``backbone.`` prefix,
    no GeM exponent) goes under ``backbone.``, with GeM's exponent at its usual start of 3. A file
    saved from the vprbench model itself passes unchanged."""
    if any(k.startswith("backbone.") for k in state_dict):
        return state_dict
    mapped = {f"backbone.{k}": v for k, v in state_dict.items()}
    mapped.setdefault("aggregation.p", torch.ones(1) * 3.0)
    return mapped
