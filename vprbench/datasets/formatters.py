"""Formatters: from the files a user obtains from each benchmark's official source to a GroundTruth.

Each takes the folder given to ``vprbench datasets format NAME --from PATH`` and the protocol, and returns
a GroundTruth whose image paths are relative to ``image_root``. A missing file is named in the error.

- ``netvlad-mat``  Pitts30k / Pitts250k: NetVLAD ``<split>.mat`` (dbStruct) plus the image tree
                   (``000/...`` database, ``queries_real/...`` queries)
- ``msls``         Mapillary SLS ``train_val/<city>/{query,database}/`` csv files and ``images/``
- ``vpr-bench``    a VPR-Bench folder (``ref/``, ``query/``, ``ground_truth_new.npy``): Nordland*, SPED
- ``nordland-pnv`` ``summer/`` and ``winter/`` frame folders plus ``cleanImageNames.txt``
- ``pairs``        two folders of identically named images (AmsterTime: ``new/`` database, ``old/`` queries)
- ``vdd``          a VDD-formatted tree (VPR-datasets-downloader's file names hold UTM): the database and
                   query folders named in ``files`` (``images/test/database``; SF-XL ``test/queries_v1``)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from vprbench.datasets.find import find_one
from vprbench.datasets.groundtruth import (
    GroundTruth,
    positives_within_radius,
    positives_within_window,
)
from vprbench.datasets.protocols import Protocol
from vprbench.datasets.readers import IMAGE_SUFFIXES, read_vdd_folders, read_vpr_bench
from vprbench.errors import VPRBenchError

MSLS_VAL_CITIES = ("cph", "sf")


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


def _vdd_msls_names(raw: pd.DataFrame | None, keys: np.ndarray) -> list[str] | None:
    """VDD's sort names of the images ``keys`` from raw.csv's latitude and longitude (the coordinates
    VDD format_mapillary.py names files by), or None where raw.csv lacks them."""
    from vprbench.datasets.vdd import msls_name_prefix

    if raw is None or not {"key", "lat", "lon"} <= set(raw.columns):
        return None
    table = raw.set_index("key")
    if not set(keys) <= set(table.index):
        return None
    lat, lon = table.loc[keys, "lat"].to_numpy(), table.loc[keys, "lon"].to_numpy()
    return [msls_name_prefix(a, o, str(k)) for a, o, k in zip(lat, lon, keys, strict=True)]


def _msls_sequences(folder: Path, keys: np.ndarray) -> list[str] | None:
    """The sequence of each image ``keys`` from ``folder``/seq_info.csv (columns key, sequence_key,
    frame_number), prefixed with the city; None where the file is absent (the metadata is optional
    for the ground truth, and only resampling by sequence needs it)."""
    path = folder / "seq_info.csv"
    if not path.is_file():
        return None
    table = pd.read_csv(path, index_col=0)
    for column in ("key", "sequence_key"):
        if column not in table.columns:
            raise VPRBenchError(f"{path}: missing column '{column}'")
    sequence = table.set_index("key")["sequence_key"]
    missing = [k for k in keys if k not in sequence.index]
    if missing:
        raise VPRBenchError(f"{path}: no sequence for {len(missing)} image(s), first {missing[0]}")
    city = folder.parent.name
    return [f"{city}/{s}" for s in sequence.loc[keys].astype(str)]


def _msls_side(
    city_dir: Path, side: str, use_subtask: bool
) -> tuple[list[str], np.ndarray, list[str] | None, list[str] | None]:
    """Kept image paths (relative to the MSLS root), their UTM, VDD sort names and sequences, for one
    city and side, filtered as mapillary_sls does for val: subtask 'all' (when asked) and no
    panoramas."""
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
    keys = post["key"].to_numpy()[keep]
    paths = [f"{base}/images/{k}.jpg" for k in keys]
    xy = post[["easting", "northing"]].to_numpy(dtype=np.float64)[keep]
    return paths, xy, _vdd_msls_names(raw, keys), _msls_sequences(folder, keys)


def format_msls(
    root: Path, protocol: Protocol, files: list[str], full: bool = False
) -> GroundTruth:
    """MSLS val, cities cph then sf (or the protocol's ``cities``), databases merged. ``full=False`` (msls-val): queries of subtask
    'all', no panoramas, and only those with a database image within the threshold (740). ``full``
    (msls-val-full): every non-panorama query, with or without positives."""
    database, queries, positives, dropped = [], [], [], 0
    db_coords, q_coords = [], []
    names: dict[str, list[str] | None] = {"database": [], "queries": []}
    sequences: dict[str, list[str] | None] = {"queries": []}
    train_val = find_one(root, "train_val")
    for city in protocol.cities or MSLS_VAL_CITIES:
        city_dir = train_val / city
        if not city_dir.is_dir():
            raise VPRBenchError(f"{train_val}: missing city folder {city}/")
        db_paths, db_xy, db_names, _ = _msls_side(city_dir, "database", use_subtask=True)
        q_paths, q_xy, q_names, q_sequences = _msls_side(city_dir, "query", use_subtask=not full)
        offset = len(database)
        found = positives_within_radius(q_xy, db_xy, protocol.threshold)
        kept = [i for i, pos in enumerate(found) if pos.size or full]
        dropped += len(found) - len(kept)
        for i in kept:
            queries.append(q_paths[i])
            positives.append(found[i] + offset)
            q_coords.append(q_xy[i])
        _extend_names(names, "database", db_names, range(len(db_paths)))
        _extend_names(names, "queries", q_names, kept)
        _extend_names(sequences, "queries", q_sequences, kept)
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
                       image_root=train_val.parent, notes=notes, coordinates=coordinates,
                       vdd_names=_complete_names(names),
                       sequences=sequences["queries"])  # fmt: skip


def _extend_names(names: dict, side: str, found: list[str] | None, kept) -> None:
    """Append the VDD names of the kept images of one city; one city without them voids the side."""
    if names[side] is None or found is None:
        names[side] = None
    else:
        names[side].extend(found[i] for i in kept)


def _complete_names(names: dict) -> dict | None:
    return names if all(v is not None for v in names.values()) else None


def format_msls_full(root: Path, protocol: Protocol, files: list[str]) -> GroundTruth:
    return format_msls(root, protocol, files, full=True)


MSLS_TEST_CITIES = ("miami", "athens", "buenosaires", "stockholm", "bengaluru", "kampala")


def _msls_test_side(
    city_dir: Path, side: str
) -> tuple[list[str], np.ndarray | None, list[str] | None]:
    """Images of subtask 'all' (as mapillary_sls reads test cities), their UTM when the folder holds a
    postprocessed.csv with easting/northing (the ground truth released after the challenge), and their
    VDD sort names when it holds a raw.csv with latitude and longitude."""
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
    keys = index["key"].to_numpy()[keep]
    paths = [f"{base}/images/{k}.jpg" for k in keys]
    raw_path = folder / "raw.csv"
    names = _vdd_msls_names(pd.read_csv(raw_path) if raw_path.is_file() else None, keys)
    post = folder / "postprocessed.csv"
    if not post.is_file():
        return paths, None, names
    table = pd.read_csv(post, index_col=0).set_index("key")
    missing = [k for k in index["key"].to_numpy()[keep] if k not in table.index]
    if missing or not {"easting", "northing"} <= set(table.columns):
        raise VPRBenchError(f"{post}: needs easting/northing for every key, missing {missing[:3]}")
    xy = table.loc[keys, ["easting", "northing"]].to_numpy(np.float64)
    return paths, xy, names


def format_msls_test(root: Path, protocol: Protocol, files: list[str]) -> GroundTruth:
    """MSLS challenge (test cities), subtask 'all', each image tagged with its city so that evaluation
    can retrieve per city. Positives within the threshold where the UTM ground truth is present; without
    it every query has none, and evaluation writes predictions for the official scorer instead."""
    test = find_one(root, "test")
    database, queries, positives, db_groups, q_groups = [], [], [], [], []
    names: dict[str, list[str] | None] = {"database": [], "queries": []}
    sequences: dict[str, list[str] | None] = {"queries": []}
    have_gt = True
    for city in protocol.cities or MSLS_TEST_CITIES:
        city_dir = test / city
        if not city_dir.is_dir():
            raise VPRBenchError(f"{test}: missing city folder {city}/")
        db_paths, db_xy, db_names = _msls_test_side(city_dir, "database")
        q_paths, q_xy, q_names = _msls_test_side(city_dir, "query")
        _extend_names(names, "database", db_names, range(len(db_paths)))
        _extend_names(names, "queries", q_names, range(len(q_paths)))
        q_keys = np.array([Path(p).stem for p in q_paths])
        _extend_names(sequences, "queries", _msls_sequences(city_dir / "query", q_keys),
                      range(len(q_paths)))  # fmt: skip
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
                       image_root=test.parent, notes=notes, vdd_names=_complete_names(names),
                       groups={"database": db_groups, "queries": q_groups},
                       sequences=sequences["queries"])  # fmt: skip


def format_vpr_bench(root: Path, protocol: Protocol, files: list[str]) -> GroundTruth:
    return read_vpr_bench(find_one(root, files[0]).parent)


def format_nordland_pnv(root: Path, protocol: Protocol, files: list[str]) -> GroundTruth:
    """Nordland** (Patch-NetVLAD split): the frames of cleanImageNames.txt, summer as database and
    winter as queries, positives within +/- threshold positions in the cleaned list.

    The position counts images of the cleaned list in file-name order, not the frame number in the
    file name: the list skips tunnels and stations (181 gaps), and both definitions of the protocol
    count positions. VDD download_nordland.py (git 3aa6613^) names the num_image-th selected image of
    sorted(glob()) with north = num_image * 25 / 10.5 m; Patch-NetVLAD nordland.npz stores image i of
    its list as (i, i)."""
    names_file = find_one(root, "cleanImageNames.txt")
    listed = [Path(n.strip()).name for n in names_file.read_text().splitlines() if n.strip()]
    names = sorted(set(listed))
    if len(names) != len(listed):
        raise VPRBenchError(f"{names_file}: {len(listed) - len(names)} duplicate image name(s)")
    summer, winter = find_one(root, "summer"), find_one(root, "winter")
    if summer.parent != winter.parent:
        raise VPRBenchError(f"{root}: summer/ and winter/ must sit in the same folder")
    positions = np.arange(len(names), dtype=np.float64)
    return GroundTruth(
        database=[f"summer/{n}" for n in names],
        queries=[f"winter/{n}" for n in names],
        positives=positives_within_window(positions, positions, protocol.threshold),
        source_format="nordland-pnv",
        positive_rule="frame-window",
        threshold=protocol.threshold,
        image_root=summer.parent,
        coordinates={
            "kind": "frame",
            "database": np.stack([positions, positions], 1),
            "queries": np.stack([positions, positions], 1),
        },
    )


def format_pairs(root: Path, protocol: Protocol, files: list[str]) -> GroundTruth:
    """Two folders of images paired by file stem (database folder first in ``files``), whatever their
    extensions (AmsterTime: new/*.png database, old/*.jpg queries, as VDD download_amstertime.py
    reads them): query i matches database i only. Pairs are in stem order."""
    db_dir, q_dir = find_one(root, files[0]), find_one(root, files[1])
    listing = {}
    for folder in (db_dir, q_dir):
        by_stem: dict[str, str] = {}
        for p in sorted(folder.iterdir()):
            if p.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            if p.stem in by_stem:
                raise VPRBenchError(
                    f"{folder}: two images with stem {p.stem}: {by_stem[p.stem]}, {p.name}"
                )
            by_stem[p.stem] = p.name
        listing[folder] = by_stem
    if listing[db_dir].keys() != listing[q_dir].keys():
        only = sorted(set(listing[db_dir]) ^ set(listing[q_dir]))
        raise VPRBenchError(
            f"{root}: {files[0]}/ and {files[1]}/ hold different pairs; unmatched stems: "
            f"{', '.join(only[:5])}"
        )
    stems = sorted(listing[db_dir])
    return GroundTruth(
        database=[f"{files[0]}/{listing[db_dir][s]}" for s in stems],
        queries=[f"{files[1]}/{listing[q_dir][s]}" for s in stems],
        positives=[np.array([i], dtype=np.int64) for i in range(len(stems))],
        source_format="pairs",
        positive_rule="same-index",
        threshold=0.0,
        image_root=db_dir.parent,
    )


def format_vdd(root: Path, protocol: Protocol, files: list[str]) -> GroundTruth:
    """A VDD tree: the database folder ``files[0]`` and the query folder ``files[1]``, siblings (so a
    shared database is one folder for all its query sets); positives within the protocol's radius of
    the UTM in VDD's file names (``@east@north@zone@...``)."""
    if len(files) != 2:
        raise VPRBenchError(f"protocol '{protocol.name}': the vdd formatter needs two folders")
    database, queries = find_one(root, files[0], True), find_one(root, files[1], True)
    if database.parent != queries.parent:
        raise VPRBenchError(
            f"{root}: {files[0]}/ and {files[1]}/ must sit in the same folder ({database.parent} "
            f"and {queries.parent})"
        )
    return read_vdd_folders(database.parent, database.name, queries.name, protocol.threshold)


def format_tokyo247(root: Path, protocol: Protocol, files: list[str]) -> GroundTruth:
    """Tokyo 24/7 from the authors' files (a tokyo247.mat below ``root``: datasets/tokyo247.py), or
    from a VDD tree (``files``: its database and query folders)."""
    from vprbench.datasets.tokyo247 import format_tokyo247_raw, is_raw

    return (
        format_tokyo247_raw(root, protocol) if is_raw(root) else format_vdd(root, protocol, files)
    )


FORMATTERS = {
    "netvlad-mat": format_netvlad_mat,
    "msls": format_msls,
    "msls-full": format_msls_full,
    "msls-test": format_msls_test,
    "vpr-bench": format_vpr_bench,
    "nordland-pnv": format_nordland_pnv,
    "pairs": format_pairs,
    "vdd": format_vdd,
    "tokyo247": format_tokyo247,
}
