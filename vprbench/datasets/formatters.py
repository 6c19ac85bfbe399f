"""Formatters: from the files a user obtains from each benchmark's official source to a GroundTruth.

Each takes the folder given to ``vprbench datasets format NAME --from PATH`` and the protocol, and returns
a GroundTruth whose image paths are relative to ``image_root``. A missing file is named in the error.

- ``netvlad-mat``  Pitts30k / Pitts250k: NetVLAD ``<split>.mat`` (dbStruct) plus the image tree
                   (``000/...`` database, ``queries_real/...`` queries)
- ``msls``         Mapillary SLS ``train_val/<city>/{query,database}/`` csv files and ``images/``
- ``vpr-bench``    a VPR-Bench folder (``ref/``, ``query/``, ``ground_truth_new.npy``): Nordland*, SPED
- ``nordland-pnv`` ``summer/`` and ``winter/`` frame folders plus ``cleanImageNames.txt``
- ``pairs``        two folders of identically named images (AmsterTime: ``new/`` database, ``old/`` queries)
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from vprbench.datasets.groundtruth import (
    GroundTruth,
    positives_within_radius,
    positives_within_window,
)
from vprbench.datasets.readers import IMAGE_SUFFIXES, read_vpr_bench
from vprbench.errors import VPRBenchError
from vprbench.protocols import Protocol

MSLS_VAL_CITIES = ("cph", "sf")


def find_one(root: Path, name: str) -> Path:
    """The single file or folder called ``name`` at or below ``root``; errors name what is missing."""
    direct = root / name
    if direct.exists():
        return direct
    found = sorted(root.rglob(name))
    if not found:
        raise VPRBenchError(f"{root}: missing {name}")
    if len(found) > 1:
        raise VPRBenchError(f"{root}: several {name} found: {', '.join(map(str, found[:3]))}")
    return found[0]


def _cell_strings(cell) -> list[str]:
    return [str(np.asarray(x).ravel()[0]) for x in np.asarray(cell).ravel()]


def read_netvlad_mat(path: Path) -> dict:
    """The dbStruct of a NetVLAD split file: image names, UTM [N, 2], and the positive radius."""
    from scipy.io import loadmat

    try:
        struct = loadmat(path)["dbStruct"][0, 0]
        return {
            "db": _cell_strings(struct["dbImageFns"]),
            "q": _cell_strings(struct["qImageFns"]),
            "utm_db": np.asarray(struct["utmDb"], dtype=np.float64).T,
            "utm_q": np.asarray(struct["utmQ"], dtype=np.float64).T,
            "threshold": float(np.asarray(struct["posDistThr"]).ravel()[0]),
        }
    except (KeyError, ValueError, IndexError, OSError) as exc:
        raise VPRBenchError(f"{path}: not a NetVLAD dbStruct .mat file ({exc})") from exc


def format_netvlad_mat(root: Path, protocol: Protocol, files: list[str]) -> GroundTruth:
    s = read_netvlad_mat(find_one(root, files[0]))
    return GroundTruth(
        database=s["db"],
        queries=[f"queries_real/{q}" for q in s["q"]],
        positives=positives_within_radius(s["utm_q"], s["utm_db"], protocol.threshold),
        source_format="netvlad-mat",
        positive_rule="utm-radius",
        threshold=protocol.threshold,
        image_root=root,
        coordinates={"kind": "utm", "database": s["utm_db"], "queries": s["utm_q"]},
    )


def _msls_side(city_dir: Path, side: str, use_subtask: bool) -> tuple[list[str], np.ndarray]:
    """Kept image paths (relative to the MSLS root) and their UTM, for one city and side, filtered as
    mapillary_sls does for val: subtask 'all' (when asked) and no panoramas."""
    folder = city_dir / side
    tables = {}
    for name in ("postprocessed.csv", "raw.csv", "subtask_index.csv"):
        path = folder / name
        if not path.is_file():
            raise VPRBenchError(f"{folder}: missing {name}")
        tables[name] = pd.read_csv(path, index_col=0)
    post, raw, subtask = tables["postprocessed.csv"], tables["raw.csv"], tables["subtask_index.csv"]
    for table, column, name in ((post, "easting", "postprocessed.csv"), (raw, "pano", "raw.csv"),
                                (subtask, "all", "subtask_index.csv")):  # fmt: skip
        if column not in table.columns:
            raise VPRBenchError(f"{folder / name}: missing column '{column}'")
    if not (len(post) == len(raw) == len(subtask)):
        raise VPRBenchError(
            f"{folder}: postprocessed.csv, raw.csv and subtask_index.csv differ in rows"
        )
    keep = ~raw["pano"].astype(bool).to_numpy()
    if use_subtask:
        keep &= subtask["all"].astype(bool).to_numpy()
    base = folder.relative_to(city_dir.parent.parent)
    paths = [f"{base}/images/{k}.jpg" for k in post["key"].to_numpy()[keep]]
    return paths, post[["easting", "northing"]].to_numpy(dtype=np.float64)[keep]


def format_msls(
    root: Path, protocol: Protocol, files: list[str], full: bool = False
) -> GroundTruth:
    """MSLS val, cities cph then sf (or the protocol's ``cities``), databases merged. ``full=False`` (msls-val): queries of subtask
    'all', no panoramas, and only those with a database image within the threshold (740). ``full``
    (msls-val-full): every non-panorama query, with or without positives."""
    database, queries, positives, dropped = [], [], [], 0
    db_coords, q_coords = [], []
    train_val = find_one(root, "train_val")
    for city in protocol.cities or MSLS_VAL_CITIES:
        city_dir = train_val / city
        if not city_dir.is_dir():
            raise VPRBenchError(f"{train_val}: missing city folder {city}/")
        db_paths, db_xy = _msls_side(city_dir, "database", use_subtask=True)
        q_paths, q_xy = _msls_side(city_dir, "query", use_subtask=not full)
        offset = len(database)
        found = positives_within_radius(q_xy, db_xy, protocol.threshold)
        for path, xy, pos in zip(q_paths, q_xy, found, strict=True):
            if pos.size or full:
                queries.append(path)
                positives.append(pos + offset)
                q_coords.append(xy)
            else:
                dropped += 1
        database.extend(db_paths)
        db_coords.append(db_xy)
    notes = (
        []
        if full
        else [f"{dropped} queries without a positive within {protocol.threshold:g} m dropped"]
    )
    coordinates = {
        "kind": "utm",
        "database": np.concatenate(db_coords),
        "queries": np.array(q_coords).reshape(-1, 2),
    }
    return GroundTruth(database, queries, positives, "msls", "utm-radius", protocol.threshold,
                       image_root=train_val.parent, notes=notes, coordinates=coordinates)  # fmt: skip


def format_msls_full(root: Path, protocol: Protocol, files: list[str]) -> GroundTruth:
    return format_msls(root, protocol, files, full=True)


MSLS_TEST_CITIES = ("miami", "athens", "buenosaires", "stockholm", "bengaluru", "kampala")


def _msls_test_side(city_dir: Path, side: str) -> tuple[list[str], np.ndarray | None]:
    """Images of subtask 'all' (as mapillary_sls reads test cities), and their UTM when the folder
    holds a postprocessed.csv with easting/northing (the ground truth released after the challenge)."""
    folder = city_dir / side
    index_path = folder / "subtask_index.csv"
    if not index_path.is_file():
        raise VPRBenchError(f"{folder}: missing subtask_index.csv")
    index = pd.read_csv(index_path, index_col=0)
    for column in ("key", "all"):
        if column not in index.columns:
            raise VPRBenchError(f"{index_path}: missing column '{column}'")
    keep = index["all"].astype(bool).to_numpy()
    base = folder.relative_to(city_dir.parent.parent)
    paths = [f"{base}/images/{k}.jpg" for k in index["key"].to_numpy()[keep]]
    post = folder / "postprocessed.csv"
    if not post.is_file():
        return paths, None
    table = pd.read_csv(post, index_col=0).set_index("key")
    missing = [k for k in index["key"].to_numpy()[keep] if k not in table.index]
    if missing or not {"easting", "northing"} <= set(table.columns):
        raise VPRBenchError(f"{post}: needs easting/northing for every key, missing {missing[:3]}")
    xy = table.loc[index["key"].to_numpy()[keep], ["easting", "northing"]].to_numpy(np.float64)
    return paths, xy


def format_msls_test(root: Path, protocol: Protocol, files: list[str]) -> GroundTruth:
    """MSLS challenge (test cities), subtask 'all', each image tagged with its city so that evaluation
    can retrieve per city. Positives within the threshold where the UTM ground truth is present; without
    it every query has none, and evaluation writes predictions for the official scorer instead."""
    test = find_one(root, "test")
    database, queries, positives, db_groups, q_groups = [], [], [], [], []
    have_gt = True
    for city in protocol.cities or MSLS_TEST_CITIES:
        city_dir = test / city
        if not city_dir.is_dir():
            raise VPRBenchError(f"{test}: missing city folder {city}/")
        db_paths, db_xy = _msls_test_side(city_dir, "database")
        q_paths, q_xy = _msls_test_side(city_dir, "query")
        have_gt &= db_xy is not None and q_xy is not None
        if db_xy is not None and q_xy is not None:
            found = positives_within_radius(q_xy, db_xy, protocol.threshold)
        else:
            found = [np.zeros(0, dtype=np.int64)] * len(q_paths)
        positives.extend(pos + len(database) for pos in found)
        database.extend(db_paths)
        queries.extend(q_paths)
        db_groups.extend([city] * len(db_paths))
        q_groups.extend([city] * len(q_paths))
    notes = (
        []
        if have_gt
        else ["no UTM ground truth in some test cities: their queries have no positives"]
    )
    return GroundTruth(database, queries, positives, "msls-test", "utm-radius", protocol.threshold,
                       image_root=test.parent, notes=notes,
                       groups={"database": db_groups, "queries": q_groups})  # fmt: skip


def format_vpr_bench(root: Path, protocol: Protocol, files: list[str]) -> GroundTruth:
    return read_vpr_bench(find_one(root, files[0]).parent)


_FRAME = re.compile(r"(\d+)")


def _frame_number(name: str) -> int:
    digits = _FRAME.findall(Path(name).stem)
    if not digits:
        raise VPRBenchError(f"{name}: no frame number in the file name")
    return int(digits[-1])


def format_nordland_pnv(root: Path, protocol: Protocol, files: list[str]) -> GroundTruth:
    """Nordland** (Patch-NetVLAD split): the frames of cleanImageNames.txt, summer as database and
    winter as queries, positives within +/- threshold frames."""
    names_file = find_one(root, "cleanImageNames.txt")
    names = [n.strip() for n in names_file.read_text().splitlines() if n.strip()]
    summer, winter = find_one(root, "summer"), find_one(root, "winter")
    if summer.parent != winter.parent:
        raise VPRBenchError(f"{root}: summer/ and winter/ must sit in the same folder")
    frames = np.array([_frame_number(n) for n in names])
    return GroundTruth(
        database=[f"summer/{n}" for n in names],
        queries=[f"winter/{n}" for n in names],
        positives=positives_within_window(frames, frames, protocol.threshold),
        source_format="nordland-pnv",
        positive_rule="frame-window",
        threshold=protocol.threshold,
        image_root=summer.parent,
        coordinates={
            "kind": "frame",
            "database": np.stack([frames, frames], 1),
            "queries": np.stack([frames, frames], 1),
        },
    )


def format_pairs(root: Path, protocol: Protocol, files: list[str]) -> GroundTruth:
    """Two folders of identically named images (database folder first in ``files``): query i
    matches database i only."""
    db_dir, q_dir = find_one(root, files[0]), find_one(root, files[1])
    listing = {
        d: sorted(p.name for p in d.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        for d in (db_dir, q_dir)
    }
    if listing[db_dir] != listing[q_dir]:
        only = sorted(set(listing[db_dir]) ^ set(listing[q_dir]))
        raise VPRBenchError(f"{root}: {files[0]}/ and {files[1]}/ differ: {', '.join(only[:5])}")
    names = listing[db_dir]
    return GroundTruth(
        database=[f"{files[0]}/{n}" for n in names],
        queries=[f"{files[1]}/{n}" for n in names],
        positives=[np.array([i], dtype=np.int64) for i in range(len(names))],
        source_format="pairs",
        positive_rule="same-index",
        threshold=0.0,
        image_root=db_dir.parent,
    )


FORMATTERS = {
    "netvlad-mat": format_netvlad_mat,
    "msls": format_msls,
    "msls-full": format_msls_full,
    "msls-test": format_msls_test,
    "vpr-bench": format_vpr_bench,
    "nordland-pnv": format_nordland_pnv,
    "pairs": format_pairs,
}
