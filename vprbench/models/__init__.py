"""Registered models: the cards (``cards/``, no torch), the registry (``registry.py``) and one module
of model code per family, imported when one of its models is first built.

Importing this package imports no torch: ``list_models``, ``get_card`` and ``parse_overrides``
read cards only, and ``create_model`` imports the model code it needs."""

from vprbench.models.card import ModelCard  # noqa: F401
from vprbench.models.registry import (  # noqa: F401
    create_model,
    get_card,
    list_models,
    parse_overrides,
)
