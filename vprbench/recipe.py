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
import copy
import itertools
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
    _check_settings(recipe.base, recipe, ("base",))
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
        _check_settings({k: v for k, v in variant.items() if k != "name"}, recipe, ("variants", i))
    if not isinstance(recipe.grid, dict) or not all(
        isinstance(v, list) and v for v in recipe.grid.values()
    ):
        raise VPRBenchError(
            f"{recipe.where('grid')}: 'grid' maps a switch to a non-empty list of values"
        )
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


def _check_settings(settings: dict, recipe: Recipe, path: tuple) -> None:
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
                train[key] = _typed_stage(value, key, recipe, (*path, "train", key))
            if key in STAGE_KEYS and value is True:
                raise VPRBenchError(
                    f"{recipe.where(*path, 'train', key)}: '{key}' is a mapping of settings "
                    "({} for the released ones) or false"
                )


def _typed_stage(settings: dict, stage: str, recipe: Recipe, path: tuple) -> dict:
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


def _merge(base: dict, over: dict) -> dict:
    """Deep merge: mappings merge key by key, anything else replaces."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def apply_overrides(settings: dict, overrides: dict) -> dict:
    """``--set`` values (dotted keys) applied on top of ``settings``. A training setting is applied
    only where there is training: ``train.*`` leaves a variant with ``train: null`` untrained, and
    ``train.<stage>.*`` leaves a stage that is off (``false``) off, so ``--set
    train.finetune.max_steps=2`` shortens every fine-tuning and starts none."""
    out = copy.deepcopy(settings)
    for dotted, value in overrides.items():
        parts = dotted.split(".")
        if parts[0] not in SETTINGS:
            raise VPRBenchError(
                f"--set {dotted}: unknown setting '{parts[0]}'; expected one of {sorted(SETTINGS)}"
            )
        if parts[0] == "train" and len(parts) > 1 and not isinstance(out.get("train"), dict):
            continue
        if (
            parts[0] == "train"
            and len(parts) > 2
            and parts[1] in STAGE_KEYS
            and not isinstance(out["train"].get(parts[1]), dict)
        ):
            continue
        target = out
        for part in parts[:-1]:
            if not isinstance(target.get(part), dict):
                target[part] = {}
            target = target[part]
        target[parts[-1]] = value
    return out


def _grid_variants(grid: dict) -> list[dict]:
    if not grid:
        return []
    keys = list(grid)
    combos = itertools.product(*(grid[k] for k in keys))
    return [
        {"name": ", ".join(f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in zip(keys, combo, strict=True)),
         "options": dict(zip(keys, combo, strict=True))}
        for combo in combos
    ]  # fmt: skip


def expand(recipe: Recipe, overrides: dict | None = None) -> list[Variant]:
    """Every (variant, seed) of ``recipe``: base, then the variant, then ``overrides``. Checks each
    against the model card and the rules that make a combination impossible; runs nothing."""
    from vprbench.models.registry import get_card, resolve_options

    named = recipe.variants + _grid_variants(recipe.grid)
    if not named:
        named = [{"name": "base"}]
    out = []
    for i, variant in enumerate(named):
        where = (
            recipe.where("variants", i, "options")
            if i < len(recipe.variants)
            else recipe.where("grid")
        )
        settings = apply_overrides(
            _merge(
                _merge(DEFAULTS, recipe.base), {k: v for k, v in variant.items() if k != "name"}
            ),
            overrides or {},
        )
        if overrides:  # --set bypassed the file's checks: the merged settings are checked again
            try:
                _check_settings(settings, recipe, ())
            except VPRBenchError as exc:
                raise VPRBenchError(f"--set: variant '{variant['name']}': {exc}") from None
        explicit = {**(recipe.base.get("options") or {}), **(variant.get("options") or {})}
        try:
            card = get_card(settings["model"])
            options = resolve_options(card, settings["options"])
        except VPRBenchError as exc:
            raise VPRBenchError(f"{where}: variant '{variant['name']}': {exc}") from None
        _check_combination(variant["name"], settings, options, explicit, where)
        for seed in settings["seeds"]:
            if not isinstance(seed, int) or isinstance(seed, bool):
                raise VPRBenchError(f"{where}: seeds must be integers, got {seed!r}")
            size = settings["image_size"]
            out.append(Variant(recipe.name, variant["name"], seed, settings["model"], options,
                               settings["weights"], tuple(settings["protocols"]),
                               tuple(size) if isinstance(size, list) else size,
                               settings["batch_size"],
                               settings["dtype"], settings["device"], settings["profile"],
                               settings["train"], i))  # fmt: skip
    return out


def _check_combination(
    name: str, settings: dict, options: dict, explicit: dict, where: str
) -> None:
    """Combinations that cannot be run, named with the variant and the rule."""

    def fail(problem: str):
        raise VPRBenchError(f"{where}: variant '{name}': {problem}")

    if options.get("aggregator", "tdda") != "tdda" and explicit.get("tdda_guidance") is True:
        fail(
            f"tdda_guidance: true needs aggregator: tdda (got {options['aggregator']}); drop tdda_guidance"
        )
    if options.get("drm") is False and "drm_levels" in explicit:
        fail("drm_levels needs drm: true (drm: false reads block 12 only)")
    if not settings["protocols"]:
        fail("no protocols to evaluate on (protocols: [...])")
    size = settings["image_size"]
    if isinstance(size, str):
        if size != "native":
            fail(f"image_size must be [height, width] in pixels or native, got {size!r}")
        if settings["train"] is not None:
            fail("image_size: native cannot train (training batches need one size)")
    elif size is not None and (
        len(size) != 2 or not all(isinstance(v, int) and v > 0 for v in size)
    ):
        fail(f"image_size must be [height, width] in pixels, got {size!r}")
    if settings["dtype"] not in ("fp32", "bf16"):
        fail(f"dtype must be fp32 or bf16, got {settings['dtype']!r}")
    train = settings["train"]
    if train is None:
        return
    if not train.get("data"):
        fail("train needs data (a GSV-Cities folder or nordland-train-sample)")
    distill, finetune = stage_settings(train, "distill"), stage_settings(train, "finetune")
    if distill is None and finetune is None:
        fail("train has neither distill nor finetune; set one, or train: null")
    if settings["weights"] is not None:
        fail("weights and train exclude each other (a trained variant evaluates its own weights)")
    if (
        distill is not None
        and not distill.get("teacher_weights")
        and not distill.get("allow_random_teacher")
    ):
        fail("distill needs teacher_weights (or allow_random_teacher: true for smoke runs)")
    if distill is not None:
        from vprbench.models.registry import get_card, resolve_options

        teacher_name = distill.get("teacher", "cricavpr")
        teacher = get_card(teacher_name)
        teacher_dim = teacher.dim_for(
            resolve_options(teacher, distill.get("teacher_options") or {})
        )
        student_dim = get_card(settings["model"]).dim_for(options)
        if teacher_dim != student_dim:
            fail(f"distillation matches descriptors element-wise, but teacher '{teacher_name}' gives "
                 f"{teacher_dim}-d and this student {student_dim}-d "
                 f"(aggregator {options.get('aggregator')}): give the variant train: "
                 "{distill: false} (fine-tuning only), or another teacher")  # fmt: skip


def stage_settings(train: dict, stage: str) -> dict | None:
    """A stage's settings ({} = the released ones), or None when the stage is off."""
    value = train.get(stage, False)
    return None if value is False or value is None else dict(value)
