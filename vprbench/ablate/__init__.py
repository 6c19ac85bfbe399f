"""Ablations: a recipe (YAML) -> its variants -> for each, the same stages as the commands (train,
extract, evaluate, profile), each cached, so a re-run computes only what changed.

``recipe`` (the schema and ``load_recipe``), ``variants`` (``expand``: base, variants, grid and --set),
``run`` (``run_recipe``: each variant's stages, keys and state).
"""
