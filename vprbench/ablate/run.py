"""Run an ablation: for each (variant, seed), train if the recipe says so, then extract, evaluate on
every protocol and profile, each stage keyed and cached.

A training stage is keyed by its whole configuration and kept under ``<results>/train/<stage>-<key>/``:
a variant that two recipes share is trained once, a finished stage (its summary.json) is never repeated,
and an interrupted one resumes from its last.pth. Extraction reuses the descriptor cache, evaluation
writes one run record per (recipe, variant, seed, protocol), and profiles are cached by key. So running a
recipe again after Ctrl-C or SIGKILL continues where it stopped. One failing variant is reported with its
error and the others go on.
"""

from __future__ import annotations

import hashlib
import json
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from vprbench.ablate.schema import Recipe, Variant
from vprbench.ablate.variants import expand, stage_settings
from vprbench.atomic import write_text
from vprbench.errors import VPRBenchError

Say = Callable[[str], None]


@dataclass
class StagePlan:
    """One training stage of a variant: its configuration, folder and state."""

    stage: str
    config: dict
    folder: Path

    @property
    def state(self) -> str:
        if (self.folder / "summary.json").is_file():
            return "cached"
        if (self.folder / "last.pth").is_file():
            return "partial (resumes)"
        return "to run"


@dataclass
class Outcome:
    """What one (variant, seed) produced, or why it failed."""

    variant: Variant
    records: list[str] = field(default_factory=list)
    profile: str | None = None
    error: str | None = None


# Bumped when the training code changes what a stage computes with the same settings (2: in-city
# batches, bilinear RandAugment, validation with the RNG forked): stages trained before are not reused.
TRAINING_CODE = 2


def training_plan(variant: Variant, results_dir: Path) -> list[StagePlan]:
    """The training stages of ``variant`` in order (distill, then finetune from its student). Each is
    keyed by what its weights depend on (:func:`stage_key`), never by bookkeeping (workers, how often
    to checkpoint or validate)."""
    if variant.train is None:
        return []
    train = variant.train
    common = {"model": variant.model, "options": variant.options, "data": train["data"],
              "cities": train.get("cities"), "seed": variant.seed, "device": variant.device,
              "image_size": list(variant.image_size) if variant.image_size else None}  # fmt: skip
    init = None if train.get("init", "random") == "random" else train["init"]
    plans: list[StagePlan] = []
    for stage in ("distill", "finetune"):
        settings = stage_settings(train, stage)
        if settings is None:
            continue
        config = {**common, **settings, "init": init}
        # the training precision, as the CLI picks it: fp16 fine-tuning on CUDA (the released
        # 16-mixed, D2VPR finetune.py:156), else fp32
        config.setdefault("dtype", "fp16" if stage == "finetune" and
                          str(variant.device).startswith("cuda") else "fp32")  # fmt: skip
        if config["image_size"] is None:
            config.pop("image_size")
        previous = None
        if plans:  # fine-tuning after distillation starts from the distilled student
            config["init"] = str(plans[-1].folder / "last.pth")
            previous = plans[-1].folder.name
        digest = stage_key(stage, config, previous)
        plans.append(StagePlan(stage, config, results_dir / "train" / f"{stage}-{digest}"))
    return plans


def stage_key(stage: str, config: dict, previous: str | None = None) -> str:
    """The digest a stage's folder is named by: the whole resolved TrainConfig but the settings that
    do not change the weights, the stage defaults and TRAINING_CODE, and the content (not the path)
    of the data, the initial weights and the teacher's. ``previous``: the folder of the stage this
    one starts from (its digest stands for the distilled student)."""
    from dataclasses import asdict

    from vprbench.train import config_from
    from vprbench.train.config import NOT_IN_RESUME_KEY
    from vprbench.train.defaults import STAGE_DEFAULTS
    from vprbench.train.fingerprint import data_fingerprint, weights_fingerprint

    values = {k: v for k, v in config.items() if k != "image_size"}
    if "image_size" in config:
        values["image_size"] = tuple(config["image_size"])
    resolved = asdict(config_from(stage, out="", **values))
    for name in NOT_IN_RESUME_KEY:
        resolved.pop(name, None)
    content = {
        "data": data_fingerprint(resolved["data"]),
        "init": previous or weights_fingerprint(resolved["init"]),
        "teacher_weights": weights_fingerprint(resolved["teacher_weights"]),
    }
    for name in ("data", "init", "teacher_weights"):
        resolved.pop(name)
    body = {"stage": stage, "config": resolved, "content": content, "code": TRAINING_CODE,
            "defaults": STAGE_DEFAULTS[stage]}  # fmt: skip
    text = json.dumps(body, sort_keys=True, default=list)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _run_training(plan: StagePlan, cache_dir: Path | None, say: Say, progress=None) -> None:
    from vprbench.train import config_from, train

    state = plan.state
    if state == "cached":
        say(f"  {plan.stage}: cached ({plan.folder})")
        return
    say(f"  {plan.stage}: {'resuming' if state != 'to run' else 'training'} -> {plan.folder}")
    values = {k: v for k, v in plan.config.items() if k != "image_size"}
    if "image_size" in plan.config:
        values["image_size"] = tuple(plan.config["image_size"])
    config = config_from(plan.stage, out=str(plan.folder), **values)
    train(
        config,
        resume=state != "to run",
        cache_dir=cache_dir,
        on_step=_epoch_progress(plan, progress),
    )


def _epoch_progress(plan: StagePlan, progress):
    """A training callback that shows each epoch's steps through ``progress`` (a factory of
    ``advance`` callbacks, as extraction takes), or None."""
    if progress is None:
        return None
    current: dict = {}

    def on_step(info) -> None:
        if current.get("epoch") != info.epoch:
            current["epoch"] = info.epoch
            current["advance"] = progress(
                f"  {plan.stage} epoch {info.epoch + 1}", info.batches_per_epoch, unit="steps"
            )
        current["advance"](1)

    return on_step


def run_variant(
    variant: Variant, results_dir: Path, cache_dir: Path | None, say: Say, progress=None
) -> Outcome:
    """Train (if asked), extract, evaluate on every protocol, profile. Raises on failure.
    ``progress``: a factory ``(label, total) -> advance(n)`` that shows the long steps."""
    from vprbench.datasets.manage import open_dataset
    from vprbench.datasets.protocols import load_registry
    from vprbench.evaluate.run import DEFAULT_KS, evaluate
    from vprbench.extract.run import extract
    from vprbench.extract.settings import ExtractSettings
    from vprbench.paths import cache_root, data_root

    outcome = Outcome(variant)
    plans = training_plan(variant, results_dir)
    for plan in plans:
        _run_training(plan, cache_dir, say, progress)
    weights = str(plans[-1].folder / "last.pth") if plans else variant.weights
    tags = {"recipe": variant.recipe, "variant": variant.name, "seed": variant.seed,
            "variant_index": variant.index,
            "variant_key": variant.key(), "train": [str(p.folder) for p in plans],
            # trained from random weights, or taught by a random teacher: starred in the tables
            "random_start": bool(plans) and (
                plans[0].config.get("init") is None
                or any(p.config.get("allow_random_teacher") and not p.config.get("teacher_weights")
                       for p in plans))}  # fmt: skip
    registry = load_registry()
    settings = ExtractSettings(model=variant.model, weights=weights, overrides=variant.options,
                               image_size=variant.image_size, batch_size=variant.batch_size,
                               dtype=variant.dtype, device=variant.device)  # fmt: skip
    for name in variant.protocols:
        dataset = open_dataset(name, data_root(), registry)
        result = extract(dataset, settings, cache_root(cache_dir), progress=progress)
        ks = [k for k in DEFAULT_KS if k <= int(result.descriptors.database_valid.sum())]
        record, path = evaluate(dataset, result, ks, results_dir=results_dir, device=variant.device,
                                tags=tags)  # fmt: skip
        outcome.records.append(str(path))
        recall = record["results"]["recall"]
        say(f"  {name}: " + "  ".join(f"R@{k} {100 * v:.2f}" for k, v in recall.items()))
    if variant.profile:
        from vprbench.profile.run import ProfileSettings, profile_model

        record = profile_model(variant.model, variant.options,
                               ProfileSettings(image_size=None if variant.image_size == "native"
                                               else variant.image_size, warmup=1, repeats=3),
                               results_dir)  # fmt: skip
        outcome.profile = record["path"]
        say(f"  profile: {record['flops']['gflops_per_image']:.2f} GFLOPs, "
            f"{record['params']['total']:,} parameters ({'cached' if record['cached'] else 'measured'})")  # fmt: skip
    return outcome


def state_path(results_dir: Path, recipe: str) -> Path:
    return results_dir / "ablations" / f"{recipe}.json"


def plan_lines(recipe: Recipe, variants: list[Variant], results_dir: Path) -> list[str]:
    """What `--dry-run` prints: per variant and seed, each stage and whether it is cached."""
    done = {}
    path = state_path(results_dir, recipe.name)
    if path.is_file():
        done = {o["key"]: o for o in json.loads(path.read_text())["outcomes"] if not o["error"]}
    from vprbench.ablate.disk import descriptor_bytes, size, stage_bytes

    lines = []
    kept, peak, descriptors, unknown = 0, 0, 0, []
    planned: set[Path] = set()  # a stage shared by variants is trained (and counted) once
    for v in variants:
        lines.append(
            f"{v.name} (seed {v.seed}): model {v.model} {json.dumps(v.options, sort_keys=True)}"
        )
        for plan in training_plan(v, results_dir):
            state, disk = plan.state, ""
            if state != "cached" and plan.folder not in planned:
                planned.add(plan.folder)
                finished, running = stage_bytes(plan.stage, plan.config)
                kept, peak = kept + finished, max(peak, kept + running)
                disk = f" ({size(finished)} when finished, up to {size(running)} while running)"
            lines.append(f"  train {plan.stage}: {state}{disk}")
        previous = done.get(_outcome_key(v))
        evaluated = previous is not None and all(Path(r).is_file() for r in previous["records"])
        lines.append(
            f"  evaluate on {', '.join(v.protocols)}: {'cached' if evaluated else 'to run'}"
        )
        if not evaluated:
            for name in v.protocols:
                n = descriptor_bytes(v.model, v.options, name)
                if n is None:
                    unknown.append(name)
                else:
                    descriptors += n
        if v.profile:
            lines.append("  profile: cached by key (measured once per model, options and size)")
    lines.append(
        f"disk: {size(kept)} of training folders under {results_dir / 'train'} (at most "
        f"{size(max(peak, kept))} while a stage runs), and up to {size(descriptors)} of descriptors "
        "in the cache (less where a variant's descriptors are cached already)"
        + (f"; descriptors of {', '.join(sorted(set(unknown)))} not counted (counts not known "
           "before formatting)" if unknown else "")
    )  # fmt: skip
    return lines


def _outcome_key(v: Variant) -> str:
    return f"{v.name}|{v.seed}|{v.key()}"


def run_recipe(
    recipe: Recipe,
    results_dir: Path,
    cache_dir: Path | None = None,
    only: list[str] | None = None,
    overrides: dict | None = None,
    say: Say = print,
    progress=None,
) -> list[Outcome]:
    """Run every (variant, seed) of ``recipe`` (or those named in ``only``); a failure is kept with
    its error and the rest go on. The state of each is written to results/ablations/<recipe>.json."""
    variants = select(expand(recipe, overrides), only)
    outcomes = []
    for i, variant in enumerate(variants, start=1):
        say(f"[{i}/{len(variants)}] {variant.name} (seed {variant.seed})")
        try:
            outcome = run_variant(variant, results_dir, cache_dir, say, progress)
        except Exception as exc:  # one variant's failure, whatever it is, must not stop the rest
            outcome = Outcome(variant, error=f"{type(exc).__name__}: {exc}")
            say(f"  FAILED: {outcome.error}")
            if not isinstance(exc, VPRBenchError):
                say("".join(traceback.format_exception(exc)[-3:]).rstrip())
        outcomes.append(outcome)
        _write_state(recipe, outcomes, results_dir)
    return outcomes


def select(variants: list[Variant], only: list[str] | None) -> list[Variant]:
    if not only:
        return variants
    names = {v.name for v in variants}
    unknown = [o for o in only if o not in names]
    if unknown:
        raise VPRBenchError(f"--only: no variant named {unknown}; variants: {sorted(names)}")
    return [v for v in variants if v.name in only]


def _write_state(recipe: Recipe, outcomes: list[Outcome], results_dir: Path) -> None:
    path = state_path(results_dir, recipe.name)
    previous = json.loads(path.read_text())["outcomes"] if path.is_file() else []
    current = {_outcome_key(o.variant): o for o in outcomes}
    kept = [o for o in previous if o["key"] not in current]
    rows = kept + [
        {"key": key, "variant": o.variant.name, "seed": o.variant.seed, "records": o.records,
         "profile": o.profile, "error": o.error}
        for key, o in current.items()
    ]  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(
        path,
        json.dumps({"recipe": recipe.name, "file": str(recipe.path), "outcomes": rows}, indent=2)
        + "\n",
    )
