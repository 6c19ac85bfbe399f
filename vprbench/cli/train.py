"""`vprbench train distill|finetune`: parse, build a TrainConfig, run it with a progress bar."""

from __future__ import annotations

from pathlib import Path

import click


def _shared_options(func):
    """Options both stages take (defaults: the stage's released ones, vprbench/train/defaults.py)."""
    options = [
        click.option("--data", required=True, help="GSV-Cities folder, or nordland-train-sample."),
        click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
                     help="Run folder: config.json, metrics.jsonl, last.pth, best.pth."),
        click.option("--cities", default=None,
                     help="Comma-separated cities (default: the stage's released list: distill its "
                          "23 cities, finetune every csv)."),
        click.option("--batching", type=click.Choice(["in-city", "in-city-fixed", "global"]),
                     default=None,
                     help="Which places share a batch (default as released: distill in-city-fixed, "
                          "finetune in-city)."),
        click.option("--epochs", type=int, default=None),
        click.option("--max-steps", type=int, default=None, help="Stop after this many steps."),
        click.option("--places-per-batch", type=int, default=None, help="P places per batch."),
        click.option("--images-per-place", type=int, default=None, help="K images per place."),
        click.option("--image-size", type=int, nargs=2, default=None, metavar="H W"),
        click.option("--lr", type=float, default=None),
        click.option("--val", multiple=True, help="Dataset to validate on (repeatable)."),
        click.option("--val-every-steps", type=int, default=None,
                     help="Validate every N steps instead of every epoch."),
        click.option("--best-metric", default=None, help="R@k of the first --val that picks best.pth."),
        click.option("--device", default="cpu", show_default=True),
        click.option("--dtype", type=click.Choice(["fp32", "bf16", "fp16"]), default=None,
                     help="Mixed precision (default: fp16 on CUDA for finetune, else fp32)."),
        click.option("--workers", type=int, default=0, show_default=True),
        click.option("--augment", type=click.Choice(["released", "none"]), default=None,
                     help="The stage's released augmentation (default), or none."),
        click.option("--seed", type=int, default=None),
        click.option("--checkpoint-every", type=int, default=None, help="Write last.pth every N steps."),
        click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                     help="Model switch of the trained model, as in extract."),
        click.option("--resume", is_flag=True, help="Continue the run in --out from last.pth."),
        click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), default=None),
    ]  # fmt: skip
    for option in reversed(options):
        func = option(func)
    return func


def _config(stage: str, model: str, overrides, **values):
    from vprbench.models.registry import check_model_request
    from vprbench.train import config_from
    from vprbench.yamlfile import parse_overrides

    # the model, its switches and the weights files are checked now, before torch is imported
    check_model_request(model, parse_overrides(overrides), values.get("init"))
    if values.get("teacher"):
        check_model_request(values["teacher"], None, values.get("teacher_weights"))
    cities = values.pop("cities")
    values["cities"] = [c.strip() for c in cities.split(",") if c.strip()] if cities else None
    values["val"] = list(values["val"])
    values["image_size"] = tuple(values["image_size"]) if values["image_size"] else None
    if values["dtype"] is None:
        values["dtype"] = (
            "fp16" if stage == "finetune" and values["device"].startswith("cuda") else "fp32"
        )
    values["out"] = str(values["out"])
    return config_from(stage, model=model, options=parse_overrides(overrides), **values)


def _run(config, resume: bool, cache_dir) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn

    from vprbench.train import train
    from vprbench.ui import console, err_console, live_progress

    with live_progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
        TextColumn("{task.fields[status]}"),
    ) as progress:  # fmt: skip
        task = progress.add_task(f"{config.stage} epoch 1", total=None, status="", unit="batches")

        def on_step(info) -> None:
            progress.update(
                task,
                description=f"{config.stage} epoch {info.epoch + 1}",
                completed=info.batch or info.batches_per_epoch,
                total=info.batches_per_epoch,
                status=f"loss {info.loss:.4f}  lr {info.lr:.2e}  {info.images_per_s:.1f} img/s",
            )
            if info.validation:
                shown = "; ".join(f"{n} " + " ".join(f"{k} {100 * v:.2f}" for k, v in r.items())
                                  for n, r in info.validation.items())  # fmt: skip
                progress.console.print(f"step {info.step}: {shown}", soft_wrap=True)

        summary = train(config, resume=resume, cache_dir=cache_dir, on_step=on_step)
    if summary["random_teacher"]:
        err_console.print("[bold yellow]the teacher ran at RANDOM INIT (--allow-random-teacher)[/]")
    best = summary["best"]
    best_text = (f", best {best['metric']} {100 * best['score']:.2f} on {best['dataset']} "
                 f"at step {best['step']}") if best else ""  # fmt: skip
    params, data = summary["parameters"], summary["data"]
    console.print(f"cities ({data['cities_note']}): {', '.join(data['cities'])}", soft_wrap=True)
    console.print(
        f"{config.stage} {config.model}: {summary['steps']} steps on {data['places']:,} places "
        f"({data['dropped_places']:,} with fewer than {config.images_per_place} images dropped), "
        f"{params['trainable']:,} of {params['total']:,} parameters trained{best_text} -> {config.out}",
        soft_wrap=True,
    )


@click.group("train")
def train_group() -> None:
    """Train D²-VPR's two stages (or fine-tune any registered model) on GSV-Cities."""


@train_group.command("distill")
@click.option("--teacher", default="cricavpr", show_default=True)
@click.option("--teacher-weights", default=None, help="Teacher weights (file, URL or official).")
@click.option("--allow-random-teacher", is_flag=True, help="Tests and smoke runs only.")
@click.option("--student", default="d2vpr", show_default=True)
@click.option("--student-weights", "init", default=None, help="Initial student weights (DINOv2).")
@click.option("--loss", type=click.Choice(["mse", "cosine"]), default="mse", show_default=True)
@_shared_options
def distill_cmd(teacher, teacher_weights, allow_random_teacher, student, init, loss, overrides,
                resume, cache_dir, **values) -> None:  # fmt: skip
    """Stage 1: distil a frozen teacher's descriptors into the student (MSE)."""
    if allow_random_teacher and teacher_weights is None:
        from vprbench.ui import err_console

        err_console.print("[bold yellow]WARNING: the teacher runs at RANDOM INIT "
                          "(--allow-random-teacher): this run teaches nothing[/]")  # fmt: skip
    config = _config("distill", student, overrides, teacher=teacher,
                     teacher_weights=teacher_weights, allow_random_teacher=allow_random_teacher,
                     init=init, loss=loss, **values)  # fmt: skip
    _run(config, resume, cache_dir)


@train_group.command("finetune")
@click.option("--model", default="d2vpr", show_default=True)
@click.option(
    "--init", default=None, help="Weights to start from (a distill checkpoint, DINOv2...)."
)
@click.option("--warmup-steps", type=int, default=None, help="Linear warm-up, in iterations.")
@click.option("--warmup-as-released", is_flag=True,
              help="The released warm-up: 3,900 read as epochs (lr stays on the ramp).")  # fmt: skip
@_shared_options
def finetune_cmd(model, init, warmup_steps, warmup_as_released, overrides, resume, cache_dir,
                 **values) -> None:  # fmt: skip
    """Stage 2: MultiSimilarity fine-tuning (loss and miner from pytorch-metric-learning)."""
    config = _config("finetune", model, overrides, init=init, warmup_steps=warmup_steps,
                     warmup_as_released=warmup_as_released or None, **values)  # fmt: skip
    _run(config, resume, cache_dir)
