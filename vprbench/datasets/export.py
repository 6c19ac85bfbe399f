"""Export a formatted dataset to other tools' formats, so results can be cross-checked with them.

- ``gsv-cities``: ``<prefix>_dbImages.npy``, ``<prefix>_qImages.npy``, ``<prefix>_gt.npy`` (object array
  of positives per query), paths relative to the dataset's image root.
- ``vdd``: ``images/test/{database,queries}/`` of symbolic links named with VDD's 15 fields. VDD keeps
  positives as UTM within 25 m, so this needs coordinates: real UTM where the source had them; for
  frame-window protocols the VDD convention north = frame * 25 / (threshold + 0.5) m (+/- threshold
  frames within 25 m; datasets/vdd.py); for same-index protocols north = index * 1000 m. Explicit
  positive lists cannot be expressed.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from vprbench.choices import EXPORT_FORMATS
from vprbench.datasets.formatted import FormattedDataset, load_coordinates
from vprbench.datasets.vdd import VDD_RADIUS, metres_per_frame
from vprbench.errors import VPRBenchError


def export_gsv_cities(ds: FormattedDataset, out: Path) -> list[Path]:
    prefix = ds.name.replace("-", "_")
    out.mkdir(parents=True, exist_ok=True)
    gt = np.empty(len(ds.positives), dtype=object)
    for i, pos in enumerate(ds.positives):
        gt[i] = pos
    files = {
        out / f"{prefix}_dbImages.npy": np.array(ds.database),
        out / f"{prefix}_qImages.npy": np.array(ds.queries),
        out / f"{prefix}_gt.npy": gt,
    }
    for path, array in files.items():
        np.save(path, array, allow_pickle=True)
    return list(files)


def _vdd_coordinates(ds: FormattedDataset) -> tuple[np.ndarray, np.ndarray]:
    coords = load_coordinates(ds)
    rule = ds.manifest["positive_rule"]
    if coords is not None and coords["kind"] == "utm" and rule == "utm-radius":
        if ds.manifest["threshold"] != VDD_RADIUS:
            raise VPRBenchError(
                f"dataset '{ds.name}': VDD positives are 25 m, this one uses {ds.manifest['threshold']:g} m"
            )
        return coords["database"], coords["queries"]
    if coords is not None and coords["kind"] == "frame" and rule == "frame-window":
        step = metres_per_frame(ds.manifest["threshold"])
        to_xy = lambda f: np.stack([np.zeros(len(f)), f[:, 0] * step], 1)  # noqa: E731
        return to_xy(coords["database"]), to_xy(coords["queries"])
    if rule == "same-index" or all(p.tolist() == [i] for i, p in enumerate(ds.positives)):
        if len(ds.database) < len(ds.queries):
            raise VPRBenchError(f"dataset '{ds.name}': same-index needs a database per query")
        north = lambda n: np.stack([np.zeros(n), np.arange(n) * 1000.0], 1)  # noqa: E731
        return north(len(ds.database)), north(len(ds.queries))
    raise VPRBenchError(
        f"dataset '{ds.name}' has explicit positives and no coordinates, which VDD file names cannot "
        "express; export it --to gsv-cities"
    )


def _vdd_name(east: float, north: float, ident: str, suffix: str) -> str:
    """15 fields: UTM east/north filled, pano_id = ``ident``, the rest empty, then the extension."""
    fields = [f"{east:010.2f}", f"{north:010.2f}", "", "", "", "", ident] + [""] * 7 + [suffix]
    return "@" + "@".join(fields)


def export_vdd(ds: FormattedDataset, out: Path) -> list[Path]:
    db_xy, q_xy = _vdd_coordinates(ds)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for split, paths, xy, tag in (
            ("database", ds.database, db_xy, "db"),
            ("queries", ds.queries, q_xy, "q"),
        ):
            folder = tmp / "images" / "test" / split
            folder.mkdir(parents=True)
            for i, (rel, (east, north)) in enumerate(zip(paths, xy, strict=True)):
                link = folder / _vdd_name(east, north, f"{tag}{i:07d}", Path(rel).suffix)
                os.symlink(ds.image_path(rel).resolve(), link)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return [out / "images" / "test" / s for s in ("database", "queries")]


def export_dataset(ds: FormattedDataset, to: str, out: Path) -> list[Path]:
    """Write ``ds`` in format ``to`` under ``out``; returns the paths written."""
    if to == "gsv-cities":
        return export_gsv_cities(ds, out)
    if to == "vdd":
        return export_vdd(ds, out)
    raise VPRBenchError(f"--to must be one of {list(EXPORT_FORMATS)}, got {to!r}")
