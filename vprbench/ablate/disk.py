"""The disk a recipe will take, for `vprbench ablate --dry-run`: training folders from the models'
parameter counts (counted on torch's meta device, without allocating or loading weights) and the
descriptor cache from the protocols' counts and each model's descriptor size.

A training stage keeps, once finished, ``last.pth`` with its weights (and ``best.pth`` when it
validates); while it runs, ``last.pth`` also holds the optimiser state (Adam's two moments per
trained parameter), and a save writes the new file beside the old one before the rename. Weights are
counted as float32 parameters (buffers are small and left out); descriptors as float32 rows.
"""

from __future__ import annotations

import warnings
from functools import cache

FLOAT32 = 4


@cache
def parameter_counts(model: str, options_json: str, stage: str) -> tuple[int, int]:
    """(total, trained) parameters of ``model`` with ``options`` (JSON) in ``stage``."""
    import json

    import torch

    from vprbench.models.common import RandomInitWarning
    from vprbench.train.stages import build_model, select_trainable

    with warnings.catch_warnings(), torch.device("meta"):
        warnings.simplefilter("ignore", RandomInitWarning)
        module = build_model(model, None, json.loads(options_json), None, "model")
        trained, total = select_trainable(module, stage)
    return total, trained


def stage_bytes(stage: str, config: dict) -> tuple[int, int]:
    """(on disk once finished, at most while running) of one training stage."""
    import json

    total, trained = parameter_counts(
        config["model"], json.dumps(config.get("options") or {}, sort_keys=True), stage
    )
    weights = FLOAT32 * total
    best = weights if config.get("val") else 0
    running = weights + 2 * FLOAT32 * trained  # last.pth with Adam's moments
    return weights + best, best + 2 * running  # the old last.pth and the new one, before the rename


def descriptor_bytes(model: str, options: dict, protocol: str) -> int | None:
    """Bytes of one extraction's descriptors (database and queries) in the cache, or None when the
    protocol's counts are not known in advance."""
    from vprbench.datasets.protocols import load_registry
    from vprbench.models.card import resolve_options
    from vprbench.models.registry import get_card

    entry = load_registry().get(protocol)
    if entry is None or not entry.database_count or not entry.queries_count:
        return None
    card = get_card(model)
    dim = card.dim_for(resolve_options(card, options))
    return FLOAT32 * dim * (entry.database_count + entry.queries_count)


def size(n: float) -> str:
    """Bytes in words: 512 B, 1.2 MB, 3.4 GB (powers of 1,000, as disk sizes are sold)."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{int(n)} B"
