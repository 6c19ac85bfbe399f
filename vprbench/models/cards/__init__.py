"""Every built-in model's card, without torch: one module per model family, beside the family's
model code of the same name in ``vprbench.models`` (``cards/d2vpr.py`` holds the cards that
``models/d2vpr.py`` builds). Each card module defines ``CARDS`` (name -> card); ``all_cards``
collects them with the module that registers their builders."""

from __future__ import annotations

import importlib
from functools import cache

from vprbench.models.card import ModelCard

FAMILIES = (
    "baselines",
    "boq",
    "dino_mix",
    "d2vpr",
    "dinov2",
    "edtformer",
    "fol",
    "megaloc",
    "netvlad",
    "resnet_vpr",
    "salad",
    "selavpr",
    "selavpr_plusplus",
    "supervlad",
)


@cache
def all_cards() -> dict[str, tuple[ModelCard, str]]:
    """name -> (card, the module whose import registers its builder)."""
    out: dict[str, tuple[ModelCard, str]] = {}
    for family in FAMILIES:
        module = importlib.import_module(f"vprbench.models.cards.{family}")
        cards = module.CARDS
        for name, card in cards.items():
            if name in out:
                raise RuntimeError(f"model '{name}' has two cards")
            out[name] = (card, f"vprbench.models.{family}")
    return out
