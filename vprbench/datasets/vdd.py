"""gmberton's VPR-datasets-downloader (VDD) conventions that decide numbers: fake coordinates for
frame-synchronised and paired datasets, and the file names whose sort order is the official batch order.

The official D²-VPR and CricaVPR evaluations read VDD folders with ``sorted(glob(...))``
(tony19980810/D2VPR datasets_ws.py), so for their batch-dependent models the images that share an
inference batch are consecutive VDD file names. ``official_batch_order`` gives that order for a
formatted dataset, whatever its source format.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vprbench.errors import VPRBenchError

VDD_RADIUS = 25.0  # metres: every VDD dataset's positive radius (D2VPR parser.py:41)


def metres_per_frame(window: float) -> float:
    """VDD's spacing of consecutive frames on its fake UTM north axis, such that frames within
    ``window`` lie within 25 m and frame ``window + 1`` does not: 25 / (window + 0.5).
    For Nordland** (window 10) this is DISTANCE_BETWEEN_FRAMES of VDD download_nordland.py (git
    3aa6613^), 2.381 m."""
    return VDD_RADIUS / (window + 0.5)


def frames_from_north(north: np.ndarray, window: float) -> np.ndarray:
    """Frame numbers back from VDD's fake north coordinates (written with 1 decimal: rounding is exact
    while the spacing exceeds 0.1 m, i.e. for windows below 249 frames)."""
    return np.rint(np.asarray(north, dtype=np.float64) / metres_per_frame(window)).astype(np.int64)


def pair_name(stem: str) -> str:
    """VDD's name for image ``stem`` of a paired dataset (SPED, AmsterTime): east 0, north
    int(stem) * 1000 without zero padding, pano_id the stem (download_sped.py,
    download_amstertime.py). Unpadded, so names sort as strings: 0, 100, 10, 1, 101, ..."""
    try:
        number = int(stem)
    except ValueError:
        raise VPRBenchError(
            f"{stem}: VDD names paired images by their number; this file name is not a number"
        ) from None
    return f"@0@{number * 1000}@@@@@{stem}@@@@@@@@.jpg"


def _format_coord(value: float, left: int, right: int) -> str:
    # VDD util.format_coord: zero-padded to left + right + 1 characters, sign included.
    return f"{float(value):0={left + right + 1}.{right}f}"


def msls_name_prefix(latitude: float, longitude: float, key: str) -> str:
    """The part of VDD's MSLS file name (util.get_dst_image_name via format_mapillary.py) that decides
    its sort position: UTM easting/northing from utm.from_latlon, zone, letter, latitude, longitude, then
    the image key, which is unique. The fields after it (timestamp, note) can never break a tie."""
    import utm

    east, north, zone, letter = utm.from_latlon(float(latitude), float(longitude))
    fields = [
        _format_coord(east, 7, 2),
        _format_coord(north, 7, 2),
        f"{zone:02d}",
        letter,
        _format_coord(latitude, 3, 5),
        _format_coord(longitude, 4, 5),
        key,
    ]
    return "@" + "@".join(fields) + "@"


def order_of(names: list[str]) -> np.ndarray:
    """The permutation that sorts ``names`` as strings (Python's sort, as VDD's sorted(glob()))."""
    return np.array(sorted(range(len(names)), key=names.__getitem__), dtype=np.int64)


def official_batch_order(
    rule: str, source_format: str, database: list[str], queries: list[str], vdd_names: dict | None
) -> tuple[dict[str, np.ndarray] | None, str, bool]:
    """The official batch order of a dataset: ({"database": perm, "queries": perm}, or None for the
    listed order; a note saying what it is; whether it is the official order). ``perm[j]`` is the
    dataset index of the j-th image in VDD order. ``vdd_names`` holds per-image VDD sort names where
    the source provided them (MSLS)."""
    if rule == "listed":
        return None, "listed order (the official one for this protocol)", True
    if source_format == "vdd":
        return None, "VDD file-name order (imported from VDD folders)", True
    if rule == "vdd-pairs":
        names = {
            side: [pair_name(Path(p).stem) for p in paths]
            for side, paths in (("database", database), ("queries", queries))
        }
    elif rule == "vdd-utm":
        if vdd_names is None:
            note = (
                "listed order, not the official VDD order, which needs each image's latitude, "
                "longitude and key (format the dataset from its MSLS csv files)"
            )
            return None, note, False
        names = vdd_names
    else:
        raise VPRBenchError(f"unknown batch order rule {rule!r}")
    orders = {side: order_of(names[side]) for side in ("database", "queries")}
    return orders, f"VDD file-name order ({rule})", True
