"""Readers of the four ground-truth formats in use, each returning a GroundTruth.

- ``vdd``: gmberton's VPR-datasets-downloader file names, ``@utm_e@utm_n@...@.jpg`` (15 fields)
- ``gsv-cities``: ``<prefix>_{dbImages,qImages,gt}.npy`` (MSLS: ``qIdx``/``pIdx`` instead of ``gt``)
- ``vpr-bench``: ``ref/``, ``query/`` and ``ground_truth_new.npy`` ([query, [refs]] rows)
- ``pnv``: Patch-NetVLAD ``.npz`` (``utmQ``, ``utmDb``, ``posDistThr``) plus image list text files

Object arrays (gsv-cities gt, VPR-Bench) are read by a restricted unpickler (datasets/safe_npy.py) that
admits numpy arrays and numbers only: a hostile file is refused, not run.
"""

from __future__ import annotations

import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vprbench.datasets.groundtruth import (
    GroundTruth,
    normalise_positive_list,
    positives_within_radius,
    positives_within_window,
)
from vprbench.errors import VPRBenchError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")

VDD_FIELDS = (
    "utm_east",
    "utm_north",
    "utm_zone_number",
    "utm_zone_letter",
    "latitude",
    "longitude",
    "pano_id",
    "tile_num",
    "heading",
    "pitch",
    "roll",
    "height",
    "timestamp",
    "note",
    "extension",
)
_TIMESTAMP = re.compile(r"^(\d{0,8})(_\d{0,6})?$")


@dataclass(frozen=True)
class VDDName:
    """The 15 fields of a VDD image file name. Empty fields are empty strings."""

    utm_east: float
    utm_north: float
    utm_zone_number: str
    utm_zone_letter: str
    latitude: str
    longitude: str
    pano_id: str
    tile_num: str
    heading: str
    pitch: str
    roll: str
    height: str
    timestamp: str
    note: str
    extension: str


def parse_vdd_name(name: str) -> VDDName:
    """Parse ``@e@n@zone@letter@lat@lon@pano@tile@heading@pitch@roll@height@time@note@.ext``.

    Raises VPRBenchError naming the file if it does not have exactly 15 fields or the UTM is not numeric.
    """
    base = Path(name).name
    parts = base.split("@")
    if len(parts) != 16 or parts[0] != "":
        raise VPRBenchError(
            f"{name}: not a VDD file name: expected '@' + 15 '@'-separated fields "
            f"(utm_east@utm_north@...@note@.ext), found {len(parts) - 1} field(s)"
        )
    fields = parts[1:]
    try:
        east, north = float(fields[0]), float(fields[1])
    except ValueError as exc:
        raise VPRBenchError(
            f"{name}: VDD fields utm_east/utm_north must be numbers, got {fields[0]!r}, {fields[1]!r}"
        ) from exc
    if fields[12] and not _TIMESTAMP.match(fields[12]):
        raise VPRBenchError(
            f"{name}: VDD field timestamp must be YYYYMMDD_hhmmss, got {fields[12]!r}"
        )
    return VDDName(east, north, *fields[2:])


def _list_images(folder: Path) -> list[str]:
    """Image files below ``folder``, as sorted paths relative to it (VDD's sorted glob order). Hidden
    files and folders are skipped, as glob skips them (an interrupted rsync's .rsync-partial/)."""
    if not folder.is_dir():
        raise VPRBenchError(f"{folder}: folder not found")
    found = (p.relative_to(folder) for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    return sorted(
        rel.as_posix()
        for rel in found
        if not any(part.startswith(".") for part in rel.parts) and (folder / rel).is_file()
    )


def read_vdd(path: str | Path, threshold: float = 25.0, unit: str = "m") -> GroundTruth:
    """A VDD split folder holding ``database/`` and ``queries/``.

    ``unit='m'``: positives within ``threshold`` metres of the UTM in the names. ``unit='frames'``:
    the names hold frames of a synchronised video on VDD's fake north axis (Nordland**: east 0, north
    = frame * 25 / (threshold + 0.5) m); frames are recovered and positives are within +/-``threshold``
    frames, which is exactly VDD's own 25 m radius."""
    root = Path(path)
    return read_vdd_folders(root, "database", "queries", threshold, unit)


def read_vdd_folders(
    root: Path, database: str, queries: str, threshold: float = 25.0, unit: str = "m"
) -> GroundTruth:
    """As :func:`read_vdd`, with the database and query folders named (below ``root``, the image
    root): SF-XL's ``database`` and ``queries_v1``, SVOX's ``gallery`` and ``queries_night``."""
    from vprbench.datasets.vdd import frames_from_north

    db = [f"{database}/{p}" for p in _list_images(root / database)]
    q = [f"{queries}/{p}" for p in _list_images(root / queries)]
    if not db or not q:
        raise VPRBenchError(f"{root}: VDD folder needs images in {database}/ and {queries}/")
    db_xy = np.array([[n.utm_east, n.utm_north] for n in map(parse_vdd_name, db)])
    q_xy = np.array([[n.utm_east, n.utm_north] for n in map(parse_vdd_name, q)])
    if unit == "m":
        positives = positives_within_radius(q_xy, db_xy, threshold)
        rule, coordinates = "utm-radius", {"kind": "utm", "database": db_xy, "queries": q_xy}
    elif unit == "frames":
        if np.any(db_xy[:, 0] != db_xy[0, 0]) or np.any(q_xy[:, 0] != db_xy[0, 0]):
            raise VPRBenchError(
                f"{root}: frame-window ground truth needs VDD's frame layout (one utm_east for every "
                "image, frames along utm_north); these names have several eastings"
            )
        db_f, q_f = (
            frames_from_north(db_xy[:, 1], threshold),
            frames_from_north(q_xy[:, 1], threshold),
        )
        positives = positives_within_window(q_f, db_f, threshold)
        rule = "frame-window"
        coordinates = {
            "kind": "frame",
            "database": np.stack([db_f, db_f], 1).astype(np.float64),
            "queries": np.stack([q_f, q_f], 1).astype(np.float64),
        }
    else:
        raise VPRBenchError(f"VDD reader: unit must be 'm' or 'frames', got {unit!r}")
    return GroundTruth(
        database=db,
        queries=q,
        positives=positives,
        source_format="vdd",
        positive_rule=rule,
        threshold=float(threshold),
        image_root=root,
        coordinates=coordinates,
    )


def _load_npy(path: Path, what: str) -> np.ndarray:
    from vprbench.datasets.safe_npy import load_npy

    return load_npy(path, what)


def _detect_prefix(folder: Path) -> str:
    found = sorted(p.name[: -len("_dbImages.npy")] for p in folder.glob("*_dbImages.npy"))
    found += sorted(
        p.name[: -len("_qImages.npy")]
        for p in folder.glob("*_qImages.npy")
        if p.name[: -len("_qImages.npy")] not in found
    )
    if len(found) != 1:
        raise VPRBenchError(
            f"{folder}: expected exactly one '<prefix>_dbImages.npy' / '<prefix>_qImages.npy' set, "
            f"found {found or 'none'}; pass --prefix"
        )
    return found[0]


def read_gsv_cities(
    folder: str | Path, prefix: str | None = None, image_root: str | Path | None = None
) -> GroundTruth:
    """gsv-cities / MixVPR / SALAD lists: ``<prefix>_dbImages.npy``, ``<prefix>_qImages.npy`` and
    either ``<prefix>_gt.npy`` (one positive array per query) or, for MSLS,
    ``<prefix>_qIdx.npy`` (the queries used) with ``<prefix>_pIdx.npy`` (their positives)."""
    folder = Path(folder)
    prefix = prefix or _detect_prefix(folder)
    db = [str(x) for x in _load_npy(folder / f"{prefix}_dbImages.npy", "database image list")]
    q_all = [str(x) for x in _load_npy(folder / f"{prefix}_qImages.npy", "query image list")]
    gt_path = folder / f"{prefix}_gt.npy"
    qidx_path, pidx_path = folder / f"{prefix}_qIdx.npy", folder / f"{prefix}_pIdx.npy"
    notes = []
    if gt_path.is_file():
        gt = _load_npy(gt_path, "ground truth")
        queries = q_all
        positives = [normalise_positive_list(row) for row in gt]
    elif qidx_path.is_file() and pidx_path.is_file():
        qidx = _load_npy(qidx_path, "query index list").astype(np.int64).reshape(-1)
        pidx = _load_npy(pidx_path, "positive index list")
        if len(qidx) != len(pidx):
            raise VPRBenchError(
                f"{pidx_path}: {len(pidx)} positive lists for {len(qidx)} query indices in {qidx_path}"
            )
        if qidx.size and (qidx.min() < 0 or qidx.max() >= len(q_all)):
            raise VPRBenchError(f"{qidx_path}: indices outside 0..{len(q_all) - 1}")
        queries = [q_all[i] for i in qidx]
        positives = [normalise_positive_list(row) for row in pidx]
        notes.append(
            f"{len(q_all) - len(queries)} of {len(q_all)} queries dropped by {qidx_path.name}"
        )
    else:
        raise VPRBenchError(
            f"{folder}: missing ground truth: expected {gt_path.name}, or {qidx_path.name} and "
            f"{pidx_path.name}"
        )
    if len(positives) != len(queries):
        raise VPRBenchError(
            f"{gt_path}: {len(positives)} positive lists for {len(queries)} queries in "
            f"{prefix}_qImages.npy"
        )
    return GroundTruth(
        database=db,
        queries=queries,
        positives=positives,
        source_format="gsv-cities",
        positive_rule="explicit",
        threshold=float("nan"),
        image_root=Path(image_root) if image_root else folder,
        notes=notes,
    )


def read_vpr_bench_positives(npy: str | Path) -> list[np.ndarray]:
    """Positives from a VPR-Bench ``ground_truth_new.npy``: rows of [query_index, [ref indices]],
    returned in query-index order. Query indices must be exactly 0..N-1."""
    npy = Path(npy)
    raw = _load_npy(npy, "VPR-Bench ground truth")
    if raw.ndim != 2 or raw.shape[1] != 2:
        raise VPRBenchError(f"{npy}: expected an (N, 2) array of [query, [refs]], got {raw.shape}")
    qids = np.array([int(row[0]) for row in raw], dtype=np.int64)
    if not np.array_equal(np.sort(qids), np.arange(len(qids))):
        raise VPRBenchError(f"{npy}: query indices are not exactly 0..{len(qids) - 1}")
    positives: list[np.ndarray] = [np.zeros(0, dtype=np.int64)] * len(qids)
    for qid, row in zip(qids, raw, strict=True):
        positives[qid] = normalise_positive_list(row[1])
    return positives


def read_vpr_bench(folder: str | Path) -> GroundTruth:
    """A VPR-Bench dataset folder: ``ref/``, ``query/`` and ``ground_truth_new.npy``. Image order is
    the sorted file names of each folder, as VPR-Bench indexes them."""
    folder = Path(folder)
    positives = read_vpr_bench_positives(folder / "ground_truth_new.npy")
    db = [f"ref/{p}" for p in _list_images(folder / "ref")]
    q = [f"query/{p}" for p in _list_images(folder / "query")]
    if len(q) != len(positives):
        raise VPRBenchError(
            f"{folder / 'ground_truth_new.npy'}: {len(positives)} queries, but {folder / 'query'} "
            f"holds {len(q)} images"
        )
    return GroundTruth(
        database=db,
        queries=q,
        positives=positives,
        source_format="vpr-bench",
        positive_rule="explicit",
        threshold=float("nan"),
        image_root=folder,
    )


def _read_list(path: Path | None, n: int, what: str) -> list[str]:
    if path is None:
        raise VPRBenchError(f"Patch-NetVLAD format needs a {what} image list (one path per line)")
    if not Path(path).is_file():
        raise VPRBenchError(f"{path}: {what} image list not found")
    names = [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]
    if len(names) != n:
        raise VPRBenchError(
            f"{path}: {len(names)} {what} images listed, the .npz has {n} coordinates"
        )
    return names


def read_pnv(
    npz: str | Path,
    database_list: str | Path | None,
    queries_list: str | Path | None,
    image_root: str | Path | None = None,
    rule: str = "utm-radius",
    threshold: float | None = None,
) -> GroundTruth:
    """Patch-NetVLAD ground truth: ``utmQ`` [Nq, 2], ``utmDb`` [Nd, 2], ``posDistThr``, and two text
    image lists in the same order.

    ``rule='utm-radius'`` reproduces Patch-NetVLAD's own radius search (Euclidean, inclusive) at
    ``threshold`` (default: the file's ``posDistThr``). ``rule='frame-window'`` treats the first
    coordinate as a frame number (the file must store frame f as (f, f)) and keeps |dq - ddb| <= threshold.
    """
    npz = Path(npz)
    if not npz.is_file():
        raise VPRBenchError(f"{npz}: Patch-NetVLAD ground-truth file not found")
    try:
        data = np.load(npz)
        utm_q, utm_db = np.asarray(data["utmQ"]), np.asarray(data["utmDb"])
        file_threshold = float(data["posDistThr"])
    except KeyError as exc:
        raise VPRBenchError(
            f"{npz}: missing array {exc} (expected utmQ, utmDb, posDistThr)"
        ) from exc
    except (ValueError, TypeError, OSError, EOFError, zipfile.BadZipFile) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise VPRBenchError(f"{npz}: cannot read as a Patch-NetVLAD .npz ({first})") from None
    for name, arr in (("utmQ", utm_q), ("utmDb", utm_db)):
        if arr.ndim != 2 or arr.shape[1] != 2 or not np.issubdtype(arr.dtype, np.number):
            raise VPRBenchError(
                f"{npz}: {name} must be an [N, 2] array of numbers, got {arr.shape} {arr.dtype}"
            )
    threshold = file_threshold if threshold is None else float(threshold)
    db = _read_list(Path(database_list) if database_list else None, len(utm_db), "database")
    q = _read_list(Path(queries_list) if queries_list else None, len(utm_q), "query")
    coordinates = {"kind": "utm", "database": utm_db, "queries": utm_q}
    if rule == "utm-radius":
        positives = positives_within_radius(utm_q, utm_db, threshold)
    elif rule == "frame-window":
        coordinates["kind"] = "frame"
        for name, arr in (("utmQ", utm_q), ("utmDb", utm_db)):
            if not np.array_equal(arr[:, 0], arr[:, 1]):
                raise VPRBenchError(
                    f"{npz}: {name} does not store frames as (f, f); frame-window needs frame numbers"
                )
        positives = positives_within_window(utm_q[:, 0], utm_db[:, 0], threshold)
    else:
        raise VPRBenchError(f"pnv reader: rule must be utm-radius or frame-window, got {rule!r}")
    return GroundTruth(
        database=db,
        queries=q,
        positives=positives,
        source_format="pnv",
        positive_rule=rule,
        threshold=threshold,
        image_root=Path(image_root) if image_root else npz.parent,
        coordinates=coordinates,
    )
