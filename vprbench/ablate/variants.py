"""A recipe's variants: ``expand(recipe, overrides) -> list[Variant]`` (base, then each variant or
grid cell, then ``--set``), pure and runs nothing, and the checks of each combination (a model and
its options, training stages, protocols) before anything runs."""

from __future__ import annotations

import copy
import itertools
import json

from vprbench.ablate.schema import (
    DEFAULTS,
    SETTINGS,
    STAGE_KEYS,
    Recipe,
    Variant,
    check_settings,
)
from vprbench.errors import VPRBenchError


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
                check_settings(settings, recipe, ())
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
