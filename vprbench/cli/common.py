"""What the command modules share: the --root/--cache-dir/--results-dir options, the extraction
options of `extract` and `evaluate` (and the settings they make), --json mode and the intervals line.

Heavy modules (torch, torchvision, faiss, the models) are imported inside the commands that use
them: `vprbench --help` and `vprbench datasets list` start in a fraction of a second."""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

import click

from vprbench.choices import (
    BAD_IMAGE_POLICIES,
    BATCH_ORDERS,
    DECODES,
    DTYPE_NAMES,
    INTERPOLATION_NAMES,
    LOADERS,
    NORMALISATIONS,
    RESIZE_STAGES,
    STORES,
)
from vprbench.datasets.protocols import load_registry
from vprbench.paths import cache_root, data_root
from vprbench.ui import (
    console,
    err_console,
    progress_bars,
)

root_option = click.option(
    "--root",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder of formatted datasets (default $VPRBENCH_DATA or ~/.local/share/vprbench/datasets).",
)
cache_option = click.option(
    "--cache-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Descriptor cache folder (default $VPRBENCH_CACHE or ~/.cache/vprbench).",
)
results_option = click.option(
    "--results-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where run records go (default $VPRBENCH_RESULTS or ./results).",
)


def extraction_options(func):
    """The options shared by `extract` and `evaluate`."""
    options = [
        click.option(
            "--model",
            "model_name",
            required=True,
            help="A registered model (`vprbench models list`).",
        ),
        click.option("--dataset", required=True, help="A protocol or imported dataset name."),
        click.option("--weights", default=None, help="Weights: a file, a URL, or 'official'."),
        click.option(
            "--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Model option override."
        ),
        click.option(
            "--image-size",
            nargs=2,
            type=int,
            default=None,
            metavar="H W",
            help="Resize every image to H x W (default: the model card's).",
        ),
        click.option(
            "--native-resolution",
            is_flag=True,
            help="No resize: every image at its own size, batched by size (models whose "
            "descriptors do not depend on the batch).",
        ),
        click.option(
            "--resize",
            "resize_stage",
            type=click.Choice(RESIZE_STAGES),
            default=None,
            help="Where the resize happens: pil (the decoded image), uint8 (torchvision on the "
            "uint8 tensor), unit (the [0, 1] tensor), normalised (the normalised tensor) "
            "(default: the model card's official pipeline; `vprbench models info`).",
        ),
        click.option(
            "--antialias/--no-antialias",
            default=None,
            help="Antialias a tensor resize (default: the card's; torchvision < 0.17 did not).",
        ),
        click.option("--batch-size", type=int, default=None),
        click.option("--dtype", type=click.Choice(DTYPE_NAMES), default="fp32", show_default=True),
        click.option(
            "--store",
            type=click.Choice(STORES),
            default="fp32",
            show_default=True,
            help="Precision the descriptors are stored in (fp16: half the disk and memory; search "
            "computes in fp32). In the cache key and the run record.",
        ),
        click.option("--device", default="cpu", show_default=True, help="cpu or cuda[:N]."),
        click.option(
            "--on-bad-image",
            type=click.Choice(BAD_IMAGE_POLICIES),
            default="error",
            show_default=True,
        ),
        click.option(
            "--workers",
            type=int,
            default=None,
            help="Image loader threads or processes (default: from the machine).",
        ),
        click.option(
            "--loader",
            type=click.Choice(LOADERS),
            default=None,
            help="PIL decoding in threads of this process, or in spawned processes writing into "
            "shared memory, which leave the GIL to the thread that queues the GPU's work "
            "(default: processes on CUDA, threads on the CPU).",
        ),
        click.option(
            "--interpolation",
            type=click.Choice(INTERPOLATION_NAMES),
            default=None,
            help="Resize interpolation (default: the model card's).",
        ),
        click.option(
            "--normalisation",
            type=click.Choice(list(NORMALISATIONS)),
            default=None,
            help="Pixel mean/std: imagenet, half (to [-1, 1]) or none (default: the model card's).",
        ),
        click.option(
            "--compile",
            "compile_model",
            is_flag=True,
            help="torch.compile the forward pass (descriptors within 1e-5 of eager; not in the key).",
        ),
        click.option(
            "--decode",
            type=click.Choice(DECODES),
            default="pil",
            show_default=True,
            help="Decode and resize images with PIL in the loader workers, or with torchvision on "
            "the --device (nvJPEG on CUDA; pixels differ slightly, so a separate cache entry).",
        ),
        click.option(
            "--batch-order",
            type=click.Choice(BATCH_ORDERS),
            default="official",
            show_default=True,
            help="Batch-dependent models: the protocol's batch order, or seeded shuffled batches.",
        ),
        root_option,
        cache_option,
    ]
    for option in reversed(options):
        func = option(func)
    return func


def change(reduction: float, less: str, more: str, noun: str) -> str:
    """A reduction (1 - ours / reference) in words: '64.2% fewer parameters', '12.0% more FLOPs'."""
    return f"{100 * abs(reduction):.1f}% {less if reduction >= 0 else more} {noun}"


def settings_from_options(
    model_name,
    weights,
    overrides,
    image_size,
    batch_size,
    dtype,
    device,
    on_bad_image,
    workers,
    interpolation=None,
    normalisation=None,
    batch_order="official",
    compile_model=False,
    decode="pil",
    loader=None,
    native_resolution=False,
    resize_stage=None,
    antialias=None,
    store="fp32",
):
    from vprbench.extract.settings import ExtractSettings
    from vprbench.models.registry import check_model_request
    from vprbench.yamlfile import parse_overrides

    if native_resolution and image_size:
        raise click.UsageError("--native-resolution and --image-size exclude each other")
    parsed = parse_overrides(overrides)
    check_model_request(model_name, parsed, weights)  # before torch is imported
    return ExtractSettings(
        model=model_name,
        weights=weights,
        overrides=parsed,
        image_size="native" if native_resolution else tuple(image_size) if image_size else None,
        resize=resize_stage,
        antialias=antialias,
        batch_size=batch_size,
        dtype=dtype,
        device=device,
        on_bad_image=on_bad_image,
        workers=workers,
        interpolation=interpolation,
        normalisation=normalisation,
        batch_order=batch_order,
        compile=compile_model,
        decode=decode,
        loader=loader,
        store=store,
    )


def run_extract(dataset_name, settings, root, cache_dir):
    from vprbench.datasets import manage

    registry = load_registry()
    dataset = manage.open_dataset(dataset_name, data_root(root), registry)
    from vprbench.extract.run import extract  # torch: after the arguments are known to be usable

    with progress_bars() as bars:
        result = extract(dataset, settings, cache_root(cache_dir), progress=bars)
    return dataset, result


def describe_intervals(record: dict) -> None:
    """One line under a recall table: how its intervals resampled the queries, and why."""
    resampling = record["results"]["resampling"]
    console.print(f"Intervals: 95%, {resampling['interval']}; queries as "
                  f"{resampling['description']} ({resampling['source']}).", soft_wrap=True)  # fmt: skip
    for key in ("note", "warning"):
        if resampling.get(key):
            err_console.print(f"[yellow]{resampling[key]}[/]", soft_wrap=True)


@contextlib.contextmanager
def json_mode(enabled: bool):
    """With --json, everything a person reads goes to stderr and stdout holds one JSON document."""
    if not enabled:
        yield lambda value: None
        return
    previous = console._file  # None: follow sys.stdout (rich resolves it at each print)
    console.file = sys.stderr
    try:
        yield lambda value: sys.stdout.write(json.dumps(value, indent=2, default=str) + "\n")
    finally:
        console._file = previous
