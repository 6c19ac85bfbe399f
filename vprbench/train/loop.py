"""One training loop for both stages: P x K batches, the stage's loss, a schedule, validation through
the evaluation code path, checkpoints a run resumes from exactly, and torch.distributed (torchrun).

A run directory (``--out``) holds:
    config.json     the whole resolved configuration, vprbench version, git revision, machine
    metrics.jsonl   one JSON object per step (step, epoch, loss, lr, images/s) and per validation
    last.pth        while running: everything to resume (weights, optimiser, scaler, RNG states,
                    position, best); once finished, the weights, position and best only (a finished
                    run has nothing left to resume, and the optimiser state is twice the weights)
    best.pth        the weights of the best validation, when validating
    summary.json    written last: a run without it is not finished
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from vprbench import __version__, allocator
from vprbench.atomic import write_text
from vprbench.errors import VPRBenchError
from vprbench.train.checkpoint import (
    gather_rng_states,
    load_checkpoint,
    save_checkpoint,
    set_rng_state,
    weights_payload,
)
from vprbench.train.config import (
    TrainConfig,
    check_out,
    check_validation,
    same_run,
    stage_cities,
)
from vprbench.train.gsv import PlaceBatchSampler, PlaceImages, read_gsv_places, train_transform
from vprbench.train.stages import (
    DISTILL_LOSSES,
    DistillLoss,
    MultiSimilarity,
    build_model,
    global_batchnorm,
    select_trainable,
)
from vprbench.train.validate import validate

DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
# Fault injection for the resume test: seconds to sleep after each step.
_SLEEP_ENV = "VPRBENCH_FAULT_SLEEP_PER_STEP"


@dataclass
class StepInfo:
    """What the progress display shows after each step."""

    step: int
    epoch: int
    batch: int
    batches_per_epoch: int
    loss: float
    lr: float
    images_per_s: float
    validation: dict | None = None


def _git_revision() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).parent, timeout=5)  # fmt: skip
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _distributed() -> tuple[int, int]:
    """(rank, world size), initialising torch.distributed when launched by torchrun. On CUDA each
    process's current device is its LOCAL_RANK's, before any collective: NCCL's object collectives
    stage their tensors on the current device, which would otherwise be cuda:0 on every rank."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    if world > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        torch.distributed.init_process_group(backend)
    return (torch.distributed.get_rank(), world) if world > 1 else (0, 1)


def train(
    config: TrainConfig,
    resume: bool = False,
    cache_dir: Path | None = None,
    on_step: Callable[[StepInfo], None] | None = None,
) -> dict:
    """Run (or resume) one training stage; returns the summary written to summary.json."""
    from vprbench.datasets.protocols import load_registry

    out = Path(config.out)
    check_out(out, resume)
    if config.dtype not in DTYPES:
        raise VPRBenchError(f"--dtype must be one of {list(DTYPES)}, got {config.dtype!r}")
    if config.stage == "distill" and config.loss not in DISTILL_LOSSES:
        raise VPRBenchError(f"--loss must be one of {list(DISTILL_LOSSES)}, got {config.loss!r}")
    rank, world = _distributed()
    # one GPU per process, by its rank on this node (LOCAL_RANK; the global rank is wrong on node 2)
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device(
        config.device if world == 1 or config.device == "cpu" else f"cuda:{local}"
    )
    registry = load_registry()
    cities, cities_note = stage_cities(config)
    data = read_gsv_places(config.data, cities, config.images_per_place)
    torch.manual_seed(config.seed)
    model = build_model(config.model, config.init, config.options, cache_dir, "model")
    trainable, total = select_trainable(model, config.stage)
    random_teacher = False
    if config.stage == "distill":
        if config.teacher_weights is None and not config.allow_random_teacher:
            raise VPRBenchError(
                "the teacher has no weights (--teacher-weights); --allow-random-teacher runs one at "
                "random init, for tests and smoke runs only"
            )
        teacher = build_model(config.teacher, config.teacher_weights, config.teacher_options,
                              cache_dir, "teacher").to(device).eval()  # fmt: skip
        for p in teacher.parameters():
            p.requires_grad_(False)
        random_teacher = teacher.weights_info.random_init
        if tuple(teacher.card.mean) != tuple(model.card.mean) or tuple(teacher.card.std) != tuple(
            model.card.std
        ):
            raise VPRBenchError(
                f"teacher '{config.teacher}' and student '{config.model}' normalise images "
                "differently; distillation feeds both the same batch"
            )
        if teacher.descriptor_dim != model.descriptor_dim:
            raise VPRBenchError(
                f"teacher '{config.teacher}' gives {teacher.descriptor_dim}-d descriptors, student "
                f"'{config.model}' {model.descriptor_dim}-d; distillation matches them element-wise"
            )
        loss_fn = DistillLoss(teacher, config.loss, world, rank)
        log_loss = _global_mean if world > 1 else (lambda loss: float(loss.detach()))
    else:
        loss_fn = MultiSimilarity(distributed=world > 1)
        log_loss = loss_fn.logged
    first_val = check_validation(config, registry)  # fail before training, not after an epoch
    allocator.reuse_freed_memory()  # as extraction: freed buffers reused (vprbench.allocator)
    if world > 1 and model.batch_dependent:
        raise VPRBenchError(
            f"model '{config.model}' is batch-dependent (its cross-image encoder attends across the "
            "batch): under torchrun each process would see only its share of the batch, and the "
            "result would depend on the number of processes; train it in one process"
        )
    if world > 1:
        # BatchNorm (the adapters') over the global batch, as one process normalises it; the
        # converted modules keep their parameters and buffers, so checkpoints load unchanged
        global_batchnorm(model)
    model.to(device).train()
    module = model
    if world > 1:
        # find_unused_parameters: DINOv2's mask_token is trainable (as released) but never used in a
        # forward pass, and DDP would otherwise wait for its gradient.
        model = torch.nn.parallel.DistributedDataParallel(
            model,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=True,
        )
    params = [p for p in module.parameters() if p.requires_grad]
    if config.optimizer == "adam":
        optimizer = torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    elif config.optimizer == "adamw":
        optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    else:
        raise VPRBenchError(f"optimizer must be adam or adamw, got {config.optimizer!r}")
    amp_dtype = DTYPES[config.dtype]
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    schedule = config.schedule()
    meta = {"model": module.card.name, "options": module.options, "stage": config.stage,
            "random_teacher": random_teacher, "vprbench_version": __version__}  # fmt: skip
    state = {"step": 0, "epoch": 0, "batch": 0, "best": None}
    resume_key = config.resume_key()  # once: it hashes the data frames and weights files
    if resume:
        ckpt = load_checkpoint(out / "last.pth")
        if not same_run(ckpt["config"], resume_key, out / "last.pth"):
            raise VPRBenchError(f"{out / 'last.pth'}: was made with another configuration; "
                                "resume with the same options")  # fmt: skip
        module.load_state_dict(ckpt["model_state_dict"])
        if not ckpt.get("finished"):  # a finished run's last.pth keeps the weights only
            optimizer.load_state_dict(ckpt["optimizer_state_dict"])
            scaler.load_state_dict(ckpt["scaler_state_dict"])
            set_rng_state(ckpt["rng"], rank, world, device)
        state = {k: ckpt["vprbench"][k] for k in ("step", "epoch", "batch")}
        state["best"] = ckpt["best"]
        best = state["best"] or {}
        if best and (best.get("metric"), best.get("dataset")) != (config.best_metric, first_val):
            state["best"] = None  # another --best-metric or --val: the old best is not comparable
    transform = train_transform(config.stage, config.image_size, module.card.mean, module.card.std,
                                config.augment)  # fmt: skip
    images = PlaceImages(data, transform)
    batches_per_epoch = len(data.places) // config.places_per_batch
    metrics_path = out / "metrics.jsonl"
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        resolved = {"config": asdict(config), "vprbench_version": __version__, "git": _git_revision(),
                    "machine": {"platform": platform.platform(), "python": platform.python_version(),
                                "torch": torch.__version__, "world_size": world,
                                "malloc": allocator.describe()},
                    "data": {"root": str(data.root), "cities": data.cities, "cities_note": cities_note,
                             "places": len(data.places), "images": data.num_images,
                             "dropped_places": data.dropped},
                    "parameters": {"trainable": trainable, "total": total},
                    "schedule": schedule.describe(), "random_teacher": random_teacher}  # fmt: skip
        write_text(out / "config.json", json.dumps(resolved, indent=2) + "\n")
        _truncate_metrics(metrics_path, state["step"])

    def checkpoint(name: str, full: bool) -> None:
        # every rank's own random states (a collective: all ranks reach each full checkpoint)
        states = gather_rng_states(device, world) if full else None
        if rank != 0:
            return
        payload = weights_payload(
            module, {**meta, **{k: state[k] for k in ("step", "epoch", "batch")}}
        )
        if full:
            payload.update(optimizer_state_dict=optimizer.state_dict(), scaler_state_dict=scaler.state_dict(),
                           rng=states, best=state["best"], config=resume_key)  # fmt: skip
        save_checkpoint(out / name, payload)

    def log(entry: dict) -> None:
        if rank == 0:
            with open(metrics_path, "a") as f:
                f.write(json.dumps(entry) + "\n")

    def run_validation() -> dict | None:
        if not config.val:
            return None
        # every rank takes part (the extraction is shared) and gets the result; forked: validation
        # draws nothing from the RNG the training goes on with, so when and whether a run validates
        # never changes its weights
        devices = [device] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            result = validate(module, config.val, config, registry, rank, world, str(device))
        if rank == 0:
            log({"step": state["step"], "epoch": state["epoch"], "val": result})
            score = result[config.val[0]].get(config.best_metric)
            if score is None:
                raise VPRBenchError(
                    f"--best-metric {config.best_metric} is not among {list(result[config.val[0]])}"
                )
            if state["best"] is None or score > state["best"]["score"]:
                state["best"] = {"score": score, "step": state["step"], "metric": config.best_metric,
                                 "dataset": config.val[0]}  # fmt: skip
                checkpoint("best.pth", full=False)
        if world > 1:
            torch.distributed.barrier()
        return result

    sleep = float(os.environ.get(_SLEEP_ENV, "0") or 0)
    done = config.max_steps is not None and state["step"] >= config.max_steps
    while state["epoch"] < config.epochs and not done:
        sampler = PlaceBatchSampler(data.places, config.places_per_batch, config.images_per_place,
                                    config.seed, state["epoch"], state["batch"], rank, world,
                                    data.city_of_place, config.batching)  # fmt: skip
        loader = DataLoader(images, batch_sampler=sampler, num_workers=config.workers,
                            pin_memory=device.type == "cuda")  # fmt: skip
        tick = time.perf_counter()
        for batch_images, labels in loader:
            lr = schedule.lr_at(state["step"], state["epoch"], batches_per_epoch)
            for group in optimizer.param_groups:
                group["lr"] = lr
            batch_images = batch_images.to(device, non_blocking=True)
            labels = labels.to(device, non_blocking=True)
            # enable_grad: a caller may have switched gradients off globally; training must not care
            autocast = torch.autocast(
                device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None
            )
            with torch.enable_grad(), autocast:
                loss = loss_fn(model, batch_images, labels)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            state["step"] += 1
            state["batch"] += 1
            now = time.perf_counter()
            speed = len(batch_images) * world / max(now - tick, 1e-9)
            tick = now
            value = log_loss(loss)
            log({"step": state["step"], "epoch": state["epoch"], "batch": state["batch"],
                 "loss": value, "lr": lr, "images_per_s": speed})  # fmt: skip
            validation, validated = None, False  # a flag: the result alone cannot tell
            if config.val_every_steps and state["step"] % config.val_every_steps == 0:
                validation, validated = run_validation(), True
            done = config.max_steps is not None and state["step"] >= config.max_steps
            epoch_end = state["batch"] >= batches_per_epoch
            if epoch_end:
                state["epoch"], state["batch"] = state["epoch"] + 1, 0
            if not validated and (done or (epoch_end and not config.val_every_steps)):
                validation = run_validation()  # every epoch, and always after the last step
            if epoch_end or done or state["step"] % config.checkpoint_every == 0:
                checkpoint("last.pth", full=True)
            if on_step and rank == 0:
                on_step(StepInfo(state["step"], state["epoch"], state["batch"], batches_per_epoch,
                                 value, lr, speed, validation))  # fmt: skip
            if sleep:
                time.sleep(sleep)
            if done or epoch_end:
                break
    if rank == 0:  # finished: last.pth keeps what --weights and a repeated --resume read
        final = weights_payload(
            module, {**meta, **{k: state[k] for k in ("step", "epoch", "batch")}}
        )
        final.update(best=state["best"], config=resume_key, finished=True)
        save_checkpoint(out / "last.pth", final)
    summary = {"steps": state["step"], "epochs_completed": state["epoch"], "best": state["best"],
               "parameters": {"trainable": trainable, "total": total},
               "last": str(out / "last.pth"), "random_teacher": random_teacher,
               "data": {"places": len(data.places), "dropped_places": data.dropped,
                        "images": data.num_images, "cities": data.cities, "cities_note": cities_note,
                        "batching": config.batching}}  # fmt: skip
    if rank == 0:
        write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    if world > 1:
        torch.distributed.barrier()
    allocator.release_freed_memory()
    return summary


def _global_mean(loss: torch.Tensor) -> float:
    """The mean over the ranks of each rank's loss (a collective): with equal shards, the loss of the
    global batch, which is what one process logs. Rank 0's own loss alone is half the story."""
    value = loss.detach().clone()
    torch.distributed.all_reduce(value)
    return float(value) / torch.distributed.get_world_size()


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop logged lines past ``step`` (a resumed run logs them again), so that the file of a resumed
    run equals that of an uninterrupted one. A cut-short last line (a full disk, a power loss during
    the append) is dropped; an unreadable line before it is an error naming the file and line."""
    if not path.is_file():
        return
    lines = [line for line in path.read_text().splitlines() if line]
    kept = []
    for number, line in enumerate(lines, 1):
        try:
            entry = json.loads(line)
        except ValueError:
            if number == len(lines):
                break  # the interrupted append
            raise VPRBenchError(
                f"{path}:{number}: not a JSON line ({line[:60]!r}); the run's metrics are damaged"
            ) from None
        if entry["step"] <= step:
            kept.append(line)
    write_text(path, "".join(line + "\n" for line in kept))
