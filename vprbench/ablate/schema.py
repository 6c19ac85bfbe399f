"""The recipe schema: the settings a recipe may give (``DEFAULTS``, ``SETTINGS``, the training stages'
``STAGE_KEYS`` with their types and ranges), the ``Recipe`` and ``Variant`` types, and the checks that
name the file, line and expected form of a wrong value. ``recipe`` reads a file against it."""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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


def check_unknown(mapping: dict, allowed: set, recipe: Recipe, path: tuple) -> None:
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
    check_unknown(settings, set(SETTINGS), recipe, path)
    for key, value in settings.items():
        kinds, form = SETTINGS[key]
        _check_type(value, kinds, form, recipe, (*path, key))
    train = settings.get("train")
    if isinstance(train, dict):
        check_unknown(train, set(TRAIN_KEYS), recipe, (*path, "train"))
        for key, value in train.items():
            kinds, form = TRAIN_KEYS[key]
            _check_type(value, kinds, form, recipe, (*path, "train", key))
            if key in STAGE_KEYS and isinstance(value, dict):
                check_unknown(value, set(STAGE_KEYS[key]), recipe, (*path, "train", key))
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
