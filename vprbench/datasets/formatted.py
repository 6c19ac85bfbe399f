"""Formatted datasets on disk: one folder per name under the data root.

    <data_root>/<name>/manifest.json   what it is, where the images are, counts, digests
    <data_root>/<name>/database.txt    database image paths, relative to image_root, one per line
    <data_root>/<name>/queries.txt     query image paths
    <data_root>/<name>/positives.npz   explicit positives per query (CSR: indptr, indices)
    <data_root>/<name>/batch_order.npz the official batch order per split, where it is not the listed
                                       one (batch-dependent models batch in it: datasets/vdd.py)
    <data_root>/<name>/sequences.npz   the capture sequence of each query, where the source has it
                                       (MSLS): the clusters of resampling rule 'sequence'

A folder is written under a temporary name and renamed into place, so a name that exists is complete.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vprbench import __version__
from vprbench.atomic import public_mode
from vprbench.datasets.groundtruth import GroundTruth, from_csr, to_csr
from vprbench.datasets.protocols import Protocol
from vprbench.errors import VPRBenchError

MANIFEST = "manifest.json"


@dataclass
class FormattedDataset:
    """A dataset ready for extraction: images, their order, and positives per query."""

    name: str
    folder: Path
    image_root: Path
    database: list[str]
    queries: list[str]
    positives: list[np.ndarray]
    manifest: dict

    @property
    def digest(self) -> str:
        """Digest of image lists and positives, recorded at import time."""
        return self.manifest["gt_digest"]

    def image_path(self, relative: str) -> Path:
        """Absolute path of an image listed in database.txt or queries.txt."""
        return self.image_root / relative

    def batch_order(self, which: str) -> np.ndarray:
        """Dataset indices of split ``which`` in the protocol's official batch order: consecutive
        entries share an inference batch of a batch-dependent model."""
        path = self.folder / "batch_order.npz"
        n = len(self.split(which))
        if not path.is_file():
            return np.arange(n, dtype=np.int64)
        with np.load(path) as z:
            order = z[which].astype(np.int64)
        if len(order) != n or not np.array_equal(np.sort(order), np.arange(n)):
            raise VPRBenchError(f"{path}: {which} is not a permutation of the {n} images")
        return order

    def split(self, which: str) -> list[str]:
        """The image list of ``'database'`` or ``'queries'``."""
        if which not in ("database", "queries"):
            raise ValueError(f"split must be 'database' or 'queries', got {which!r}")
        return self.database if which == "database" else self.queries


def count_mismatches(
    protocol: Protocol | None, n_database: int, n_queries: int
) -> list[tuple[str, int, int]]:
    """(side, actual, expected) for each side whose count differs from the protocol's."""
    if protocol is None:
        return []
    sides = (
        ("database", n_database, protocol.database_count),
        ("queries", n_queries, protocol.queries_count),
    )
    return [(side, n, want) for side, n, want in sides if want is not None and want != n]


def check_counts(gt: GroundTruth, protocol: Protocol | None, source: str) -> None:
    """Raise if ``gt``'s counts differ from what ``protocol`` expects."""
    for side, actual, expected in count_mismatches(protocol, len(gt.database), len(gt.queries)):
        raise VPRBenchError(
            f"{source}: {actual} {side} images, but protocol '{protocol.name}' expects {expected}"
        )


def find_missing_images(
    gt: GroundTruth, image_root: Path, progress: Callable[[int], None] | None = None
) -> list[str]:
    """Relative paths from the ground truth that are not files under ``image_root``."""
    missing = []
    for rel in [*gt.database, *gt.queries]:
        if not (image_root / rel).is_file():
            missing.append(rel)
        if progress:
            progress(1)
    return missing


def write_formatted(
    gt: GroundTruth,
    name: str,
    data_root: Path,
    protocol: Protocol | None,
    source: str,
    overwrite: bool = True,
) -> Path:
    """Write ``gt`` as formatted dataset ``name`` under ``data_root``, atomically. Returns its folder."""
    if gt.image_root is None:
        raise VPRBenchError(f"{source}: ground truth has no image root; cannot format it")
    check_counts(gt, protocol, source)
    data_root.mkdir(parents=True, exist_ok=True)
    final = data_root / name
    if final.exists() and not overwrite:
        raise VPRBenchError(f"{final}: dataset '{name}' already exists")
    from vprbench.datasets.vdd import official_batch_order

    order, order_note, order_official = official_batch_order(
        protocol.batch_order if protocol else "listed",
        gt.source_format,
        gt.database,
        gt.queries,
        gt.vdd_names,
    )
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=data_root))
    try:
        if order is not None:
            np.savez(tmp / "batch_order.npz", **order)
        (tmp / "database.txt").write_text("\n".join(gt.database) + "\n")
        (tmp / "queries.txt").write_text("\n".join(gt.queries) + "\n")
        indptr, indices = to_csr(gt.positives)
        np.savez(tmp / "positives.npz", indptr=indptr, indices=indices)
        if gt.groups is not None:
            np.savez(
                tmp / "groups.npz",
                database=np.array(gt.groups["database"]),
                queries=np.array(gt.groups["queries"]),
            )
        if gt.sequences is not None:
            np.savez(tmp / "sequences.npz", queries=np.array(gt.sequences, dtype=str))
        if gt.coordinates is not None:
            np.savez(
                tmp / "coordinates.npz",
                kind=gt.coordinates["kind"],
                database=np.asarray(gt.coordinates["database"], dtype=np.float64),
                queries=np.asarray(gt.coordinates["queries"], dtype=np.float64),
            )
        manifest = {
            "name": name,
            "protocol": protocol.name if protocol else None,
            "source": source,
            "source_format": gt.source_format,
            "image_root": str(Path(gt.image_root).resolve()),
            "num_database": len(gt.database),
            "num_queries": len(gt.queries),
            "num_queries_without_positives": gt.num_without_positives,
            "positive_rule": gt.positive_rule,
            "threshold": None if np.isnan(gt.threshold) else gt.threshold,
            "gt_digest": gt.digest(),
            "batch_order": {"note": order_note, "official": order_official},
            "notes": gt.notes,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "vprbench_version": __version__,
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        public_mode(tmp, directory=True)  # mkdtemp made it 0700
        if final.exists():
            old = final.with_name(f".{name}.old-{os.getpid()}")
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def load_formatted(name: str, data_root: Path) -> FormattedDataset:
    """Read formatted dataset ``name``; raises with the file at fault if it is absent or damaged."""
    folder = data_root / name
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        raise VPRBenchError(
            f"dataset '{name}' is not formatted under {data_root} (no {manifest_path}); "
            f"run `vprbench datasets import` first"
        )
    try:
        manifest = json.loads(manifest_path.read_text())
        database = (folder / "database.txt").read_text().splitlines()
        queries = (folder / "queries.txt").read_text().splitlines()
        with np.load(folder / "positives.npz") as z:
            positives = from_csr(z["indptr"], z["indices"])
    except (OSError, ValueError, KeyError) as exc:
        raise VPRBenchError(f"{folder}: formatted dataset is damaged ({exc})") from exc
    if len(database) != manifest["num_database"] or len(queries) != manifest["num_queries"]:
        raise VPRBenchError(f"{folder}: image lists disagree with {MANIFEST} counts")
    if len(positives) != len(queries):
        raise VPRBenchError(
            f"{folder}: positives.npz has {len(positives)} rows for {len(queries)} queries"
        )
    return FormattedDataset(
        name=name,
        folder=folder,
        image_root=Path(manifest["image_root"]),
        database=database,
        queries=queries,
        positives=positives,
        manifest=manifest,
    )


def load_coordinates(ds: FormattedDataset) -> dict | None:
    """The coordinates stored with a formatted dataset, or None if its source had none."""
    path = ds.folder / "coordinates.npz"
    if not path.is_file():
        return None
    with np.load(path) as z:
        return {"kind": str(z["kind"]), "database": z["database"], "queries": z["queries"]}


def load_sequences(ds: FormattedDataset) -> np.ndarray | None:
    """[Nq] str: the capture sequence of each query, or None if the source had none."""
    path = ds.folder / "sequences.npz"
    if not path.is_file():
        return None
    with np.load(path) as z:
        sequences = z["queries"]
    if len(sequences) != len(ds.queries):
        raise VPRBenchError(f"{path}: {len(sequences)} sequences for {len(ds.queries)} queries")
    return sequences


def load_groups(ds: FormattedDataset) -> dict | None:
    """Retrieval groups of each image (MSLS cities), or None if the dataset has none."""
    path = ds.folder / "groups.npz"
    if not path.is_file():
        return None
    with np.load(path) as z:
        return {"database": z["database"], "queries": z["queries"]}


def list_formatted(data_root: Path) -> list[str]:
    """Names of the formatted datasets under ``data_root``."""
    if not data_root.is_dir():
        return []
    return sorted(p.name for p in data_root.iterdir() if (p / MANIFEST).is_file())
