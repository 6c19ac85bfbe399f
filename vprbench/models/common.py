"""Helpers that every model builder uses: loading weights and recording where they came from."""

from __future__ import annotations

import warnings
from pathlib import Path

from vprbench.errors import VPRBenchError
from vprbench.models.registry import ModelCard, VPRModel, WeightsInfo
from vprbench.models.weights import read_checkpoint, resolve_weights, sha256_file, strict_load


class RandomInitWarning(UserWarning):
    """A model runs without pretrained weights; its descriptors mean little."""


def load_weights(
    model: VPRModel, spec: str | None, card: ModelCard, cache_dir: Path | None
) -> VPRModel:
    """Load ``spec`` into ``model`` with strict keys (after the model's key map), or mark it random.

    ``spec`` is a file, a URL, or ``official`` (the card's URL and sha256).
    """
    if spec is None:
        warnings.warn(
            f"model '{card.name}' runs at RANDOM INIT: no weights given (use --weights)",
            RandomInitWarning,
            stacklevel=3,
        )
        model.weights_info = WeightsInfo(source=None, sha256=None, random_init=True)
        return model
    sha256 = None
    if spec == "official":
        if card.weights is None or card.weights.url is None:
            raise VPRBenchError(f"model '{card.name}' has no official weights URL")
        spec, sha256 = card.weights.url, card.weights.sha256
    path = resolve_weights(spec, cache_dir, sha256)
    state = model.map_state_dict(read_checkpoint(path))
    strict_load(model, state, str(path))
    model.weights_info = WeightsInfo(source=str(spec), sha256=sha256_file(path), random_init=False)
    return model
