"""The model registry: every model's card, and the builder that makes it.

    model = create_model("dinov2-gem", weights="dinov2_vits14_pretrain.pth", backbone="vits14")

The cards live in ``vprbench.models.cards`` (no torch): ``list_models`` and ``get_card`` read them
without importing any model code. ``create_model`` imports the model's module, whose
``@register_model`` gives the builder. The command line's model choices come from here and nowhere
else.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from vprbench.choices import IMAGENET_MEAN, IMAGENET_STD  # noqa: F401  (re-exported)
from vprbench.errors import VPRBenchError
from vprbench.models.card import (  # noqa: F401  (re-exported)
    ModelCard,
    Release,
    WeightsInfo,
    WeightSource,
    resolve_options,
    weights_target,
)
from vprbench.yamlfile import parse_overrides  # noqa: F401  (re-exported)

if TYPE_CHECKING:
    from vprbench.models.base import VPRModel

Builder = Callable[..., "VPRModel"]
_REGISTERED: dict[str, tuple[ModelCard, Builder]] = {}


def register_model(card: ModelCard) -> Callable[[Builder], Builder]:
    """Decorator: register ``builder(options: dict, weights: str | None, cache_dir) -> VPRModel``
    for ``card``. A built-in model's card must be the one in ``vprbench.models.cards``; a card of
    another name (a plugin, a test's toy model) is added to the registry as it is."""

    def wrap(builder: Builder) -> Builder:
        from vprbench.models.cards import all_cards

        known = all_cards().get(card.name)
        if known is not None and known[0] is not card:
            raise RuntimeError(f"model '{card.name}': not the card of vprbench.models.cards")
        if card.name in _REGISTERED:
            raise RuntimeError(f"model '{card.name}' registered twice")
        _REGISTERED[card.name] = (card, builder)
        return builder

    return wrap


def _cards() -> dict[str, ModelCard]:
    from vprbench.models.cards import all_cards

    cards = {name: card for name, (card, _) in all_cards().items()}
    cards.update({name: card for name, (card, _) in _REGISTERED.items()})
    return cards


def list_models() -> list[str]:
    """Registered model names, sorted."""
    return sorted(_cards())


def get_card(name: str) -> ModelCard:
    """The card of a registered model; the error lists valid names (and the nearest one)."""
    cards = _cards()
    if name not in cards:
        import difflib

        near = difflib.get_close_matches(name, list(cards), n=1)
        hint = f"did you mean '{near[0]}'? " if near else ""
        raise VPRBenchError(
            f"unknown model '{name}'; {hint}valid names: {', '.join(sorted(cards))}"
        )
    return cards[name]


def _builder(name: str) -> Builder:
    """The builder of ``name``, importing its module (which registers it) the first time."""
    from vprbench.models.cards import all_cards

    if name not in _REGISTERED:
        importlib.import_module(all_cards()[name][1])
    return _REGISTERED[name][1]


def create_model(
    name: str, weights: str | None = None, cache_dir=None, **overrides: Any
) -> VPRModel:
    """Build a registered model in eval mode, with ``weights`` (file, URL or 'official') loaded."""
    card = get_card(name)
    options = resolve_options(card, overrides)
    try:
        model = _builder(name)(options=options, weights=weights, cache_dir=cache_dir)
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


def check_model_request(
    name: str, overrides: dict[str, Any] | None = None, weights: str | None = None
) -> ModelCard:
    """The card of ``name`` once its options and weights are known to be usable: the checks every
    command runs on its arguments before it imports torch."""
    card = get_card(name)
    resolve_options(card, overrides or {})
    if weights is not None:
        weights_target(card, weights)
    return card
