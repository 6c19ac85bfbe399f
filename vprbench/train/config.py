"""A training run's configuration: ``TrainConfig`` (everything the trained weights depend on), its
resume key, the stage's released defaults (``config_from``), and the checks that must pass before a
first step (the output folder, the validation datasets and metric, the stage's cities)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from vprbench.errors import VPRBenchError
from vprbench.train.schedule import Schedule


@dataclass
class TrainConfig:
    """Everything a training run depends on (written to config.json; a resume must match it)."""

    stage: str  # "distill" | "finetune"
    model: str
    data: str
    out: str
    options: dict = field(default_factory=dict)
    init: str | None = None  # weights to start from (finetune --init; distill: the student's)
    teacher: str | None = None
    teacher_weights: str | None = None
    teacher_options: dict = field(default_factory=dict)
    allow_random_teacher: bool = False
    loss: str = "mse"  # distill: mse | cosine; finetune: multisimilarity
    cities: list[str] | None = None
    epochs: int = 20
    max_steps: int | None = None
    places_per_batch: int = 8
    images_per_place: int = 4
    image_size: tuple[int, int] = (224, 224)
    optimizer: str = "adam"  # adam | adamw
    lr: float = 2.5e-5
    weight_decay: float = 0.0
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    warmup_steps: int = 0
    warmup_as_released: bool = False
    val: list[str] = field(default_factory=list)
    val_every_steps: int | None = None  # None: after every epoch
    best_metric: str = "R@1"
    device: str = "cpu"
    dtype: str = "fp32"
    workers: int = 0
    seed: int = 0
    checkpoint_every: int = 100  # steps; also at every epoch end
    val_batch_size: int = 32
    augment: str = "released"  # or "none": resize and normalise only
    batching: str = "in-city"  # which places share a batch (gsv.BATCHINGS; released per stage)

    def schedule(self) -> Schedule:
        return Schedule(self.lr, tuple(self.milestones), self.gamma, self.warmup_steps,
                        self.warmup_as_released)  # fmt: skip

    def resume_key(self) -> dict:
        """What must be equal for --resume to continue a run: what changes the weights, with the
        data and weights files by content (their paths may change), and the checkpoint format.
        Workers, the device and validation (which runs with the RNG forked, so it draws nothing the
        training would) may change too."""
        from vprbench.train.fingerprint import data_fingerprint, weights_fingerprint

        key = asdict(self)
        for name in NOT_IN_RESUME_KEY:
            key.pop(name)
        key["data"] = data_fingerprint(self.data)
        key["init"] = weights_fingerprint(self.init)
        key["teacher_weights"] = weights_fingerprint(self.teacher_weights)
        key["format"] = RESUME_FORMAT
        return json.loads(json.dumps(key))


# TrainConfig fields that do not change the trained weights: left out of the resume key (and of
# ablate's stage key), so that correcting one of them never costs a run.
NOT_IN_RESUME_KEY = ("out", "workers", "device", "val", "val_every_steps", "val_batch_size",
                     "best_metric", "checkpoint_every")  # fmt: skip
# The resume key's format. 2: in-city batches, bilinear RandAugment, the released
# distillation cities, files by content. A run of an older format trained otherwise: not resumable.
RESUME_FORMAT = 2


def same_run(saved: dict, key: dict, path: Path) -> bool:
    """Whether a checkpoint's resume key ``saved`` matches ``key``; refuses one of another format."""
    if saved.get("format") != RESUME_FORMAT:
        raise VPRBenchError(
            f"{path}: made by an older vprbench, which trained otherwise (global batches, "
            "nearest-neighbour RandAugment, every city): it cannot be resumed; start the run again "
            "in another --out"
        )
    return saved == key


def check_out(out: Path, resume: bool) -> None:
    if resume:
        if not (out / "last.pth").is_file():
            raise VPRBenchError(f"{out}: --resume, but there is no last.pth to resume from")
    elif any((out / name).exists() for name in ("last.pth", "best.pth", "summary.json")):
        raise VPRBenchError(f"{out}: already holds a run; use --resume or another --out")


def stage_cities(config: TrainConfig) -> tuple[list[str] | None, str]:
    """The cities a stage reads, and why: ``--cities`` if given; else the released list of the stage
    (distillation: its 23 named cities, in its order, where the folder holds them all; fine-tuning:
    every Dataframes/*.csv)."""
    from vprbench.train.gsv import RELEASED_DISTILL_CITIES, resolve_data_root

    if config.cities:
        return list(config.cities), "--cities"
    if config.stage != "distill":
        return None, "every Dataframes/*.csv, as the released fine-tuning (cities='all')"
    frames = resolve_data_root(config.data) / "Dataframes"
    absent = [c for c in RELEASED_DISTILL_CITIES if not (frames / f"{c}.csv").is_file()]
    if not absent:
        return list(RELEASED_DISTILL_CITIES), "the released distillation's 23 cities, in its order"
    return None, (f"every Dataframes/*.csv: the released distillation's 23 cities are not all here "
                  f"({len(absent)} missing, e.g. {absent[0]})")  # fmt: skip


def check_validation(config: TrainConfig, registry) -> str | None:
    """Open every --val dataset and check --best-metric against the first, before training: a typo
    must not cost an epoch. Returns the first --val name (None without validation)."""
    import re

    from vprbench.choices import DEFAULT_KS
    from vprbench.datasets.manage import open_dataset
    from vprbench.paths import data_root

    found = re.fullmatch(r"R@(\d+)", config.best_metric)
    if not config.val:
        return None
    datasets = [open_dataset(name, data_root(), registry) for name in config.val]
    ks = [k for k in DEFAULT_KS if k <= len(datasets[0].database)] or [1]
    if not found or int(found.group(1)) not in ks:
        raise VPRBenchError(
            f"--best-metric {config.best_metric!r}: validation on {config.val[0]} (the first --val) "
            f"reports {', '.join(f'R@{k}' for k in ks)}"
        )
    return config.val[0]


def config_from(stage: str, **values) -> TrainConfig:
    """A TrainConfig from the stage's released defaults updated with ``values`` (None = default)."""
    from vprbench.train.defaults import STAGE_DEFAULTS

    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise VPRBenchError(f"unknown training option(s) {unknown}")
    merged = {**STAGE_DEFAULTS[stage], **{k: v for k, v in values.items() if v is not None}}
    return TrainConfig(stage=stage, **merged)
