"""Reading an ablation recipe (recipes/*.yaml): ``load_recipe`` checks it against the schema
(``ablate.schema``: what it does not know is rejected with file and line) and expands every
combination once (``ablate.variants.expand``, pure, runs nothing), before anything runs.

    name: drm                      # default: the file's stem
    description: ...
    base:                          # settings every variant starts from
      model: d2vpr
      options: {drm: true}         # model switches (--set of extract)
      weights: null                # weights to evaluate when nothing is trained
      protocols: [nordland-sample]
      image_size: [224, 224]
      batch_size: null             # null: the official size for batch-dependent models
      dtype: fp32
      device: cpu
      seeds: [0]                   # several seeds: mean and spread in the report
      profile: true
      train:                       # null: evaluate `weights` as they are
        data: nordland-train-sample
        init: random               # random, or a weights file (e.g. dinov2_vits14_pretrain.pth)
        distill: {teacher: cricavpr, teacher_weights: official, epochs: 20}   # or false
        finetune: {epochs: 120}    # or false; after distill it starts from the distilled student
    variants:                      # named rows of the tables; each overrides base
      - {name: "no DRM", options: {drm: false}}
    grid: {aggregator: [tdda, gem]}   # every combination, named "aggregator=gem"

Precedence: command line ``--set key=value`` (dotted keys: ``options.drm=false``,
``train.finetune.max_steps=2``) > variant > base > the defaults below and the model card.
"""

from __future__ import annotations

from pathlib import Path

from vprbench.ablate.schema import TOP_KEYS, Recipe, check_settings, check_unknown
from vprbench.ablate.variants import expand
from vprbench.errors import VPRBenchError


def load_recipe(path: str | Path) -> Recipe:
    """Read and validate a recipe file (every key, type and combination); nothing runs."""
    from vprbench.yamlfile import read_yaml_with_lines

    path = Path(path)
    raw, lines = read_yaml_with_lines(path, "recipe")
    if not isinstance(raw, dict):
        raise VPRBenchError(f"{path}: a recipe is a mapping with keys {sorted(TOP_KEYS)}")
    recipe = Recipe(
        name=str(raw.get("name") or path.stem),
        path=path,
        description=str(raw.get("description") or ""),
        base=raw.get("base") or {},
        variants=raw.get("variants") or [],
        grid=raw.get("grid") or {},
        lines=lines,
    )
    check_unknown(raw, TOP_KEYS, recipe, ())
    if not isinstance(recipe.base, dict):
        raise VPRBenchError(f"{recipe.where('base')}: 'base' must be a mapping of settings")
    check_settings(recipe.base, recipe, ("base",))
    if not isinstance(recipe.variants, list):
        raise VPRBenchError(f"{recipe.where('variants')}: 'variants' must be a list of mappings")
    names = set()
    for i, variant in enumerate(recipe.variants):
        if not isinstance(variant, dict) or not isinstance(variant.get("name"), str):
            raise VPRBenchError(
                f"{recipe.where('variants', i)}: each variant is a mapping with a 'name'"
            )
        if variant["name"] in names:
            raise VPRBenchError(
                f"{recipe.where('variants', i, 'name')}: variant '{variant['name']}' named twice"
            )
        names.add(variant["name"])
        check_settings({k: v for k, v in variant.items() if k != "name"}, recipe, ("variants", i))
    if not isinstance(recipe.grid, dict) or not all(
        isinstance(v, list) and v for v in recipe.grid.values()
    ):
        raise VPRBenchError(
            f"{recipe.where('grid')}: 'grid' maps a switch to a non-empty list of values"
        )
    expand(recipe)  # every combination checked now, before anything runs
    return recipe
