"""`vprbench datasets ...`: list, inspect, import, format, download, export and verify datasets."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.table import Table

from vprbench.choices import (
    EXPORT_FORMATS,
    SAMPLE_NAME,
)
from vprbench.cli.common import root_option
from vprbench.datasets.protocols import GT_FORMATS, count_text, load_registry
from vprbench.errors import VPRBenchError
from vprbench.paths import data_root
from vprbench.ui import (
    console,
    err_console,
    print_table,
    progress_bars,
    whole,
)


@click.group()
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
            (
                "database",
                f"{count_text(p.database_count, p.database_reported)} ({p.database_layout})"
                + _shared(p, registry),
            ),
            ("queries", f"{count_text(p.queries_count, p.queries_reported)} ({p.queries_layout})"),
            ("positive", f"{p.positive_summary()} (rule {p.positive_rule})"),
            ("ground truth", f"{p.gt_source} [formats: {', '.join(p.gt_formats)}]"),
            ("inference batch", _batch_sizes(p)),
            ("batch order", p.batch_order),
            *((("images", p.image_rule),) if p.image_rule else ()),
            ("licence", p.licence),
            ("obtain", p.obtain),
        ):
            table.add_row(label, value)
        print_table(whole(table, wrap=("",)))
    if name in formatted:
        console.print(f"[bold]Formatted copy[/] at {folder / name}:")
        console.print_json(json.dumps(load_formatted(name, folder).manifest))


def _shared(p, registry) -> str:
    """The shared database a protocol's database is, and who else reads it."""
    from vprbench.datasets.protocols import sharing_database

    if p.database_shared is None:
        return ""
    others = ", ".join(sharing_database(p, registry))
    return f"; shared database '{p.database_shared}', also of {others}"


def _batch_sizes(p) -> str:
    """Official inference batch size of each batch-dependent convention on protocol ``p``."""
    from vprbench.datasets.protocols import BATCH_CONVENTIONS

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
        if hasattr(report, "transferred"):  # an rsync folder (datasets.rsync.RsyncReport)
            repaired = f", {len(report.repaired)} fetched again" if report.repaired else ""
            console.print(f"{report.path}: {report.files:,} files, {report.transferred:,} fetched "
                          f"this time{repaired}; every file's checksum equals the server's",
                          soft_wrap=True)  # fmt: skip
            continue
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
