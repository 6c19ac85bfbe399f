"""Import a local dataset in any supported ground-truth format, verify a formatted one, and locate the
embedded Nordland sample. The command line calls these; they hold the logic."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from vprbench.choices import SAMPLE_NAME
from vprbench.datasets import readers
from vprbench.datasets.formatted import (
    FormattedDataset,
    check_counts,
    count_mismatches,
    find_missing_images,
    load_formatted,
    write_formatted,
)
from vprbench.datasets.groundtruth import GroundTruth
from vprbench.datasets.protocols import GT_FORMATS, Protocol
from vprbench.errors import VPRBenchError

ProgressFactory = Callable[[str, int], Callable[[int], None]]


def embedded_sample_path() -> Path:
    """Folder of the Nordland sample shipped in the package (VPR-Bench layout)."""
    return Path(str(resources.files("vprbench") / "data" / "nordland_sample"))


def read_ground_truth(
    path: Path,
    fmt: str,
    protocol: Protocol | None = None,
    threshold: float | None = None,
    prefix: str | None = None,
    image_root: Path | None = None,
    database_list: Path | None = None,
    queries_list: Path | None = None,
) -> GroundTruth:
    """Dispatch to the reader of ``fmt``. The threshold defaults to the protocol's, where it has one,
    and is in the protocol's unit (metres or frames); a given ``threshold`` is in that unit too."""
    if fmt not in GT_FORMATS:
        raise VPRBenchError(f"unknown format '{fmt}'; valid formats: {', '.join(GT_FORMATS)}")
    if not path.exists():
        raise VPRBenchError(f"{path}: not found")
    rule = protocol.positive_rule if protocol is not None else None
    if threshold is None and rule in ("utm-radius", "frame-window"):
        threshold = protocol.threshold
    if fmt == "vdd":
        if rule == "frame-window":
            gt = readers.read_vdd(path, threshold=threshold, unit="frames")
        else:
            gt = readers.read_vdd(path, threshold=25.0 if threshold is None else threshold)
    elif fmt == "gsv-cities":
        gt = readers.read_gsv_cities(path, prefix=prefix, image_root=image_root)
    elif fmt == "vpr-bench":
        gt = readers.read_vpr_bench(path)
    else:
        gt = readers.read_pnv(
            path,
            database_list,
            queries_list,
            image_root=image_root,
            rule="frame-window" if rule == "frame-window" else "utm-radius",
            threshold=threshold,
        )
    if image_root is not None:
        gt.image_root = image_root
    return gt


def import_dataset(
    path: Path,
    fmt: str,
    name: str,
    data_root: Path,
    registry: dict[str, Protocol],
    progress: ProgressFactory | None = None,
    **reader_options,
) -> tuple[Path, GroundTruth]:
    """Read ``path`` as ``fmt``, check counts (against the registry when ``name`` is a protocol) and
    that every image exists, then write the formatted dataset. Returns (folder, ground truth)."""
    protocol = registry.get(name)
    gt = read_ground_truth(Path(path), fmt, protocol=protocol, **reader_options)
    return finish_formatting(gt, name, data_root, protocol, Path(path), progress), gt


def finish_formatting(
    gt: GroundTruth,
    name: str,
    data_root: Path,
    protocol: Protocol | None,
    source: Path,
    progress: ProgressFactory | None = None,
) -> Path:
    """Check counts and that every image exists, then write the formatted dataset atomically."""
    check_counts(gt, protocol, str(source))
    tick = (
        progress(f"check images of {name}", len(gt.database) + len(gt.queries))
        if progress
        else None
    )
    missing = find_missing_images(gt, Path(gt.image_root), tick)
    if missing:
        shown = ", ".join(missing[:5]) + (
            f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        )
        raise VPRBenchError(f"{gt.image_root}: {len(missing)} image(s) missing: {shown}")
    return write_formatted(gt, name, data_root, protocol, source=str(Path(source).resolve()))


def format_dataset(
    name: str,
    source: Path,
    data_root: Path,
    registry: dict[str, Protocol],
    progress: ProgressFactory | None = None,
) -> tuple[Path, GroundTruth]:
    """Format a benchmark from the files of its official source (``datasets format NAME --from``)."""
    from vprbench.datasets.formatters import FORMATTERS
    from vprbench.datasets.protocols import get_protocol

    protocol = get_protocol(name, registry)
    if protocol.formatter is None:
        raise VPRBenchError(
            f"protocol '{name}' has no official layout to format from; use `vprbench datasets import`"
        )
    if not Path(source).exists():
        raise VPRBenchError(f"{source}: not found")
    gt = FORMATTERS[protocol.formatter](Path(source), protocol, list(protocol.source_files))
    return finish_formatting(gt, name, data_root, protocol, Path(source), progress), gt


def download_instructions(protocol: Protocol) -> str:
    """Where and how to request a dataset that may not be redistributed, and what to run next."""
    then = f"vprbench datasets format {protocol.name} --from PATH"
    text = (
        f"'{protocol.name}' cannot be downloaded by vprbench: {protocol.licence.rstrip('.')}. "
        f"Obtain it: {protocol.obtain.rstrip('.')}"
    )
    named = f"vprbench datasets format {protocol.name} --from"  # the obtain text names the step
    return text if named in text else f"{text}; then run `{then}`"


def download_dataset(
    name: str,
    data_root: Path,
    registry: dict[str, Protocol],
    progress: ProgressFactory | None = None,
) -> tuple[Path, GroundTruth, list]:
    """Fetch every archive of ``name`` (mirrors in order, resumable, checked), unpack them under
    ``<data_root>/_raw/<name>/``, then format and verify counts. Returns (folder, gt, fetch reports)."""
    from vprbench.datasets.download import Archive, discard, extract, fetch
    from vprbench.datasets.protocols import get_protocol

    protocol = get_protocol(name, registry)
    if name == SAMPLE_NAME:  # embedded in the package: nothing to fetch
        ds = ensure_sample(data_root, registry)
        return ds.folder, read_ground_truth(embedded_sample_path(), "vpr-bench"), []
    raw = data_root / "_raw" / name
    unpacked = raw / "files"
    if (
        protocol.rsync is not None
    ):  # a folder served by rsync: fetched (resumably), verified, formatted
        from vprbench.datasets.rsync import rsync_fetch

        folder = unpacked / protocol.rsync.rstrip("/").rsplit("/", 1)[-1]
        report = rsync_fetch(protocol.rsync, folder, progress)
        out, gt = format_dataset(name, folder, data_root, registry, progress)
        return out, gt, [report]
    if not protocol.downloads:
        raise VPRBenchError(download_instructions(protocol))
    reports = []
    for spec in protocol.downloads:
        archive = Archive(
            spec["name"],
            tuple(spec["mirrors"]),
            spec.get("sha256"),
            extract=spec.get("extract", True),
            target=spec.get("target"),
        )
        report = fetch(archive, raw / "archives", progress)
        reports.append(report)
        if archive.extract:
            try:
                extract(report.path, unpacked, archive.target)
            except VPRBenchError as exc:
                discard(report.path)  # never reuse a damaged download
                raise VPRBenchError(f"{exc}; deleted it, run the download again") from exc
        else:
            folder = unpacked / archive.target if archive.target else unpacked
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(report.path, folder / archive.name)
    folder, gt = format_dataset(name, unpacked, data_root, registry, progress)
    return folder, gt, reports


def ensure_sample(data_root: Path, registry: dict[str, Protocol]) -> FormattedDataset:
    """The formatted nordland-sample, imported from the package on first use."""
    try:
        ds = load_formatted(SAMPLE_NAME, data_root)
        if Path(ds.image_root) == embedded_sample_path().resolve():
            return ds
    except VPRBenchError:
        pass
    import_dataset(embedded_sample_path(), "vpr-bench", SAMPLE_NAME, data_root, registry)
    return load_formatted(SAMPLE_NAME, data_root)


@dataclass
class VerifyReport:
    """What `datasets verify` found. ``ok`` is true only when every list is empty."""

    name: str
    checked_images: int = 0
    missing: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    count_errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unreadable or self.count_errors)


def verify_dataset(
    name: str,
    data_root: Path,
    registry: dict[str, Protocol],
    progress: Callable[[int], None] | None = None,
) -> VerifyReport:
    """Check that every image of a formatted dataset is present and decodable and that its counts
    equal the registry's (when ``name`` is a registered protocol)."""
    ds = load_formatted(name, data_root)
    report = VerifyReport(name)
    for side, actual, expected in count_mismatches(
        registry.get(name), len(ds.database), len(ds.queries)
    ):
        report.count_errors.append(f"{side}: {actual} images, registry expects {expected}")
    for rel in [*ds.database, *ds.queries]:
        path = ds.image_path(rel)
        if not path.is_file():
            report.missing.append(rel)
        else:
            try:
                with Image.open(path) as im:
                    im.load()
            except (UnidentifiedImageError, OSError):
                report.unreadable.append(rel)
        report.checked_images += 1
        if progress:
            progress(1)
    return report


def open_dataset(name: str, data_root: Path, registry: dict[str, Protocol]) -> FormattedDataset:
    """A formatted dataset by name; the embedded sample is imported on first use. The error for a
    missing one says how to obtain it, or lists the valid names."""
    if name == SAMPLE_NAME:
        return ensure_sample(data_root, registry)
    try:
        return load_formatted(name, data_root)
    except VPRBenchError:
        if name in registry:
            raise VPRBenchError(
                f"dataset '{name}' is not formatted under {data_root}; obtain it: "
                f"{registry[name].obtain}"
            ) from None
        from vprbench.datasets.formatted import list_formatted

        valid = sorted(set(registry) | set(list_formatted(data_root)))
        raise VPRBenchError(f"unknown dataset '{name}'; valid names: {', '.join(valid)}") from None
