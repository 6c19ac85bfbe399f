"""Ablation recipes (recipes/*.yaml): a typed schema that rejects what it does not know, with file and
line, and a pure ``expand(recipe) -> list[Variant]`` that runs nothing.

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

import contextlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from vprbench.errors import VPRBenchError

DEFAULTS: dict[str, Any] = {
    "model": "d2vpr",
    "options": {},
    "weights": None,
    "protocols": [],
    "image_size": None,
    "batch_size": None,
    "dtype": "fp32",
    "device": "cpu",
    "seeds": [0],
    "profile": True,
    "train": None,
}
# key: (python types, the expected form, said in errors)
SETTINGS = {
    "model": ((str,), "a registered model name"),
    "options": ((dict,), "a mapping of model switches"),
    "weights": ((str, type(None)), "a weights file, URL, official, or null"),
    "protocols": ((list,), "a list of dataset names"),
    "image_size": ((list, str, type(None)), "[height, width], native or null"),
    "batch_size": ((int, type(None)), "a positive integer or null"),
    "dtype": ((str,), "fp32 or bf16"),
    "device": ((str,), "cpu or cuda"),
    "seeds": ((list,), "a list of integers"),
    "profile": ((bool,), "true or false"),
    "train": ((dict, type(None)), "a mapping (data, init, distill, finetune) or null"),
}
TRAIN_KEYS = {
    "data": ((str,), "a GSV-Cities folder or nordland-train-sample"),
    "init": ((str,), "random or a weights file"),
    "distill": ((dict, bool), "a mapping of distillation settings, or false"),
    "finetune": ((dict, bool), "a mapping of fine-tuning settings, or false"),
    "cities": ((list, type(None)), "a list of city names"),
}
# Each stage key: (python types, the expected form). A YAML 1.1 float without a dot ("2e-4", which
# PyYAML reads as a string) is accepted where a float is expected and converted.
_COMMON_STAGE_KEYS = {
    "epochs": ((int,), "a positive integer"),
    "max_steps": ((int, type(None)), "a positive integer or null"),
    "places_per_batch": ((int,), "a positive integer"),
    "images_per_place": ((int,), "a positive integer"),
    "lr": ((float,), "a positive number"),
    "augment": ((str,), "released or none"),
    "batching": ((str,), "in-city, in-city-fixed or global"),
    "dtype": ((str,), "fp32, bf16 or fp16 (fp16: CUDA)"),
    "val": ((list,), "a list of dataset names"),
    "best_metric": ((str,), "R@k of the first val"),
    "workers": ((int,), "a non-negative integer"),
    "checkpoint_every": ((int,), "a positive integer"),
}
STAGE_KEYS = {
    "distill": {**_COMMON_STAGE_KEYS,
                "teacher": ((str,), "a registered model name"),
                "teacher_weights": ((str, type(None)), "a weights file, URL or official"),
                "teacher_options": ((dict,), "a mapping of the teacher's model switches"),
                "allow_random_teacher": ((bool,), "true or false"),
                "loss": ((str,), "mse or cosine")},
    "finetune": {**_COMMON_STAGE_KEYS,
                 "weight_decay": ((float,), "a non-negative number"),
                 "warmup_steps": ((int,), "a non-negative integer"),
                 "warmup_as_released": ((bool,), "true or false"),
                 "milestones": ((list,), "a list of epochs (integers)")},
}  # fmt: skip
# The smallest value of each numeric stage key (lr and weight_decay must also be finite; lr > 0).
_AT_LEAST = {"epochs": 1, "max_steps": 1, "places_per_batch": 2, "images_per_place": 1,
             "warmup_steps": 0, "workers": 0, "checkpoint_every": 1, "weight_decay": 0.0}  # fmt: skip
_CHOICES = {"augment": ("released", "none"), "batching": ("in-city", "in-city-fixed", "global"),
            "dtype": ("fp32", "bf16", "fp16"), "loss": ("mse", "cosine")}  # fmt: skip
TOP_KEYS = {"name", "description", "base", "variants", "grid"}


@dataclass
class Recipe:
    """A parsed recipe: base settings, named variants, a grid, and where each key was written."""

    name: str
    path: Path
    description: str
    base: dict
    variants: list[dict]
    grid: dict
    lines: dict = field(default_factory=dict)  # key path (tuple) -> line in the file

    def where(self, *path) -> str:
        """``file:line`` of the deepest key of ``path`` that the file holds."""
        for n in range(len(path), 0, -1):
            if tuple(path[:n]) in self.lines:
                return f"{self.path}:{self.lines[tuple(path[:n])]}"
        return str(self.path)


@dataclass(frozen=True)
class Variant:
    """One row of an ablation table, at one seed: everything the runner needs, nothing run yet."""

    recipe: str
    name: str
    seed: int
    model: str
    options: dict
    weights: str | None
    protocols: tuple[str, ...]
    image_size: tuple[int, int] | str | None  # "native": no resize
    batch_size: int | None
    dtype: str
    device: str
    profile: bool
    train: dict | None
    index: int = 0  # position in the recipe: the row order of its tables

    def key(self) -> str:
        """A stable digest of what the variant computes (its name and recipe excluded)."""
        import hashlib

        body = {k: v for k, v in self.__dict__.items() if k not in ("recipe", "name", "index")}
        return hashlib.sha256(json.dumps(body, sort_keys=True, default=list).encode()).hexdigest()[
            :16
        ]


def _to_python(node, path: tuple, lines: dict, source: Path):
    """A YAML node as Python values, noting each mapping key's line under its path."""
    if isinstance(node, yaml.MappingNode):
        out = {}
        for key_node, value_node in node.value:
            key = key_node.value
            if key in out:
                raise VPRBenchError(
                    f"{source}:{key_node.start_mark.line + 1}: key '{key}' given twice"
                )
            lines[(*path, key)] = key_node.start_mark.line + 1
            out[key] = _to_python(value_node, (*path, key), lines, source)
        return out
    if isinstance(node, yaml.SequenceNode):
        items = []
        for i, item in enumerate(node.value):
            lines[(*path, i)] = item.start_mark.line + 1
            items.append(_to_python(item, (*path, i), lines, source))
        return items
    return yaml.safe_load(yaml.serialize(node))


def load_recipe(path: str | Path) -> Recipe:
    """Read and validate a recipe file (every key, type and combination); nothing runs."""
    from vprbench.yamlfile import read_yaml

    path = Path(path)
    node = read_yaml(path, "recipe", compose=True)
    lines: dict = {}
    raw = _to_python(node, (), lines, path) if node is not None else None
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
    _check_unknown(raw, TOP_KEYS, recipe, ())
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
    from vprbench.ablate.variants import expand

    expand(recipe)  # every combination checked now, before anything runs
    return recipe


def _check_unknown(mapping: dict, allowed: set, recipe: Recipe, path: tuple) -> None:
    for key in mapping:
        if key not in allowed:
            raise VPRBenchError(
                f"{recipe.where(*path, key)}: unknown key '{key}'; expected one of {sorted(allowed)}"
            )


def _check_type(value, kinds, form: str, recipe: Recipe, path: tuple) -> None:
    ok = False if isinstance(value, bool) and bool not in kinds else isinstance(value, kinds)
    if not ok:
        raise VPRBenchError(f"{recipe.where(*path)}: '{path[-1]}' must be {form}, got {value!r}")


def check_settings(settings: dict, recipe: Recipe, path: tuple) -> None:
    _check_unknown(settings, set(SETTINGS), recipe, path)
    for key, value in settings.items():
        kinds, form = SETTINGS[key]
        _check_type(value, kinds, form, recipe, (*path, key))
    train = settings.get("train")
    if isinstance(train, dict):
        _check_unknown(train, set(TRAIN_KEYS), recipe, (*path, "train"))
        for key, value in train.items():
            kinds, form = TRAIN_KEYS[key]
            _check_type(value, kinds, form, recipe, (*path, "train", key))
            if key in STAGE_KEYS and isinstance(value, dict):
                _check_unknown(value, set(STAGE_KEYS[key]), recipe, (*path, "train", key))
                train[key] = typed_stage(value, key, recipe, (*path, "train", key))
            if key in STAGE_KEYS and value is True:
                raise VPRBenchError(
                    f"{recipe.where(*path, 'train', key)}: '{key}' is a mapping of settings "
                    "({} for the released ones) or false"
                )


def typed_stage(settings: dict, stage: str, recipe: Recipe, path: tuple) -> dict:
    """A stage's settings with every value checked against STAGE_KEYS (floats written 2e-4
    converted); raises naming the file, line, key and the expected form."""
    out = {}
    for key, value in settings.items():
        kinds, form = STAGE_KEYS[stage][key]
        if float in kinds and isinstance(value, str):
            with contextlib.suppress(ValueError):
                value = float(value)
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        _check_type(value, kinds, form, recipe, (*path, key))
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if number and (
            (key in _AT_LEAST and not value >= _AT_LEAST[key])
            or (key == "lr" and not 0 < value < float("inf"))
            or (isinstance(value, float) and value != value)
        ):
            raise VPRBenchError(
                f"{recipe.where(*path, key)}: '{key}' must be {form}, got {value!r}"
            )
        if key in _CHOICES and value not in _CHOICES[key]:
            raise VPRBenchError(
                f"{recipe.where(*path, key)}: '{key}' must be {form}, got {value!r}"
            )
        if key == "milestones" and not all(isinstance(m, int) and not isinstance(m, bool)
                                           for m in value):  # fmt: skip
            raise VPRBenchError(f"{recipe.where(*path, key)}: 'milestones' must be {form}")
        if key == "val" and not all(isinstance(v, str) for v in value):
            raise VPRBenchError(f"{recipe.where(*path, key)}: 'val' must be {form}")
        out[key] = value
    return out
