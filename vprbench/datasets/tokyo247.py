"""Tokyo 24/7 from the files its authors distribute, as VPR-datasets-downloader's format_tokyo247.py
makes the VDD version (VDD git 2f886d5), without VDD: the database named by ``tokyo247.mat``
(``dbStruct.dbImageFns``, released as .png, with ``utmDb`` in UTM zone 54S) and the 315 queries of
``247query_subset_v2`` (each ``NNNNN.jpg`` beside ``NNNNN.csv``: id, latitude, longitude, ...).

What VDD does and this formatter does the same way:
- each database cutout is re-saved under a ``.jpg`` name, that is as JPEG at PIL's default quality
  (format_tokyo247.py: ``Image.open(png).save(dst)``, ``dst`` from util.get_dst_image_name, whose
  extension is ``.jpg``), here into ``database_jpeg/`` beside the cutout folders;
- each query is resized to a shorter side of 480 px (torchvision ``Resize(480)`` on the PIL image:
  bilinear, the long side ``int(480 * long / short)``) and saved as JPEG at PIL's default quality,
  as VDD saves it, into ``247query_subset_v2_480/`` beside the originals (written once; a later
  format keeps them, so the cache key stays);
- coordinates: the database's UTM to latitude/longitude in zone 54S and back (``utm``), the
  queries' latitude/longitude to UTM, each rounded to the centimetre as VDD's file names write them
  (VDD's test set reads the UTM back from the names); positives within the protocol's radius;
- the official batch order is VDD's file-name order (``@east@north@zone@letter@lat@lon@pano@tile@``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from vprbench.datasets.find import find_one
from vprbench.datasets.groundtruth import GroundTruth, positives_within_radius
from vprbench.datasets.protocols import Protocol
from vprbench.errors import VPRBenchError

QUERY_FOLDER = "247query_subset_v2"
DATABASE_FOLDER = "database_jpeg"  # the cutouts as VDD saves them
RESIZED_SUFFIX = "_480"
SHORT_SIDE = 480  # VDD format_tokyo247.py: torchvision.transforms.Resize(480)
_TILE = re.compile(r"_012_(\d+)\.png$")  # VDD: tile_num = int(...) // 30, 0-11


def is_raw(root: Path) -> bool:
    """Whether ``root`` holds the authors' files (a tokyo247.mat) rather than a VDD tree."""
    return (root / "tokyo247.mat").is_file() or any(root.rglob("tokyo247.mat"))


def _read_database(mat: Path) -> tuple[list[str], np.ndarray]:
    from scipy.io import loadmat

    try:
        struct = loadmat(mat)["dbStruct"][0, 0]
        names = [str(np.asarray(x).ravel()[0]) for x in np.asarray(struct["dbImageFns"]).ravel()]
        utm_db = np.asarray(struct["utmDb"], dtype=np.float64).T
    except (KeyError, ValueError, IndexError, OSError) as exc:
        raise VPRBenchError(f"{mat}: not Tokyo 24/7's dbStruct (dbImageFns, utmDb): {exc}") from exc
    if utm_db.shape != (len(names), 2):
        raise VPRBenchError(f"{mat}: utmDb is {utm_db.shape[::-1]}, expected 2 x {len(names)}")
    # released as .png (VDD: f.replace('.jpg', '.png'))
    return [n.replace(".jpg", ".png") for n in names], utm_db


def _vdd_prefix(latitude: float, longitude: float, pano_id: str, tile: int | None) -> str:
    """VDD util.get_dst_image_name up to the tile number: the part that decides the sort order."""
    from vprbench.datasets.vdd import msls_name_prefix

    tile_field = "" if tile is None else f"{tile:02d}"
    return msls_name_prefix(latitude, longitude, pano_id) + tile_field + "@"


def _utm_of(prefix: str) -> tuple[float, float]:
    east, north = prefix.split("@")[1:3]
    return float(east), float(north)


def _save_like_vdd(source: Path, target: Path, short_side: int | None) -> None:
    """``source`` as VDD writes it: torchvision Resize(short_side) on the PIL image when asked
    (bilinear; unchanged when the short side is already that), saved as JPEG at PIL's default
    quality (VDD's ``.jpg`` names); atomically, and only when ``target`` is older than ``source``
    (formatting again keeps the files, and with them the cache key)."""
    from PIL import Image

    if target.is_file() and target.stat().st_mtime_ns >= source.stat().st_mtime_ns:
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    with Image.open(source) as im:
        out = im
        if short_side is not None:
            w, h = im.size
            short, long = (w, h) if w <= h else (h, w)
            new_long = int(short_side * long / short)
            size = (short_side, new_long) if w <= h else (new_long, short_side)
            out = im if size == (w, h) else im.resize(size, Image.BILINEAR)
        tmp = target.with_name(f".{target.name}.tmp")
        try:
            out.save(tmp, format="JPEG")
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise VPRBenchError(
                f"{source}: cannot be saved as JPEG as VDD saves it ({exc})"
            ) from exc
    os.replace(tmp, target)


def _save_all(pairs: list[tuple[Path, Path]], short_side: int | None) -> None:
    """_save_like_vdd over ``pairs`` on every CPU (PIL decodes and encodes outside the GIL)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        for _ in pool.map(lambda pair: _save_like_vdd(*pair, short_side), pairs):
            pass


def _query_location(csv: Path) -> tuple[str, float, float]:
    try:
        fields = csv.read_text().splitlines()[0].split(",")
        return fields[0], float(fields[1]), float(fields[2])
    except (OSError, IndexError, ValueError) as exc:
        raise VPRBenchError(
            f"{csv}: expected a first line 'id,latitude,longitude,...' ({exc})"
        ) from exc


def format_tokyo247_raw(root: Path, protocol: Protocol) -> GroundTruth:
    import utm

    mat = find_one(root, "tokyo247.mat")
    names, utm_db = _read_database(mat)
    if not names:
        raise VPRBenchError(f"{mat}: dbImageFns is empty")
    # the folder the .mat's names are relative to: where the first one is
    found = sorted(p for p in root.rglob(Path(names[0]).name)
                   if p.as_posix().endswith("/" + names[0]))  # fmt: skip
    if not found:
        raise VPRBenchError(f"{root}: missing the database image {names[0]} (named by {mat})")
    database_root = found[0].parents[len(Path(names[0]).parts) - 1]
    queries_dir = find_one(root, QUERY_FOLDER, folder=True)
    image_root = Path(os.path.commonpath([database_root, queries_dir.parent]))
    sources = sorted(queries_dir.glob("*.jpg"))
    resized_dir = queries_dir.with_name(QUERY_FOLDER + RESIZED_SUFFIX)
    try:
        resized_dir.mkdir(exist_ok=True)
        (database_root / DATABASE_FOLDER).mkdir(exist_ok=True)
    except OSError as exc:
        raise VPRBenchError(
            f"{exc.filename}: cannot write the images as VDD saves them ({exc.strerror}); format "
            "from a writable copy"
        ) from exc
    queries, q_prefixes = [], []
    for source in sources:
        pano_id, latitude, longitude = _query_location(source.with_suffix(".csv"))
        queries.append((resized_dir / source.name).relative_to(image_root).as_posix())
        q_prefixes.append(_vdd_prefix(latitude, longitude, pano_id, None))
    db_prefixes = []
    for name, (east, north) in zip(names, utm_db, strict=True):
        tile = _TILE.search(name)
        if tile is None or not 0 <= int(tile.group(1)) // 30 < 12:
            raise VPRBenchError(f"{mat}: {name}: expected a cutout name ending _012_<yaw>.png")
        latitude, longitude = utm.to_latlon(east, north, 54, "S")
        db_prefixes.append(_vdd_prefix(latitude, longitude, Path(name).name[:22],
                                       int(tile.group(1)) // 30))  # fmt: skip
    missing = [n for n in names if not (database_root / n).is_file()]
    if missing:
        shown = ", ".join(missing[:3]) + (
            f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        )
        raise VPRBenchError(
            f"{database_root}: {len(missing)} cutout(s) named by {mat} missing: {shown}"
        )
    for side, prefixes in (("database", db_prefixes), ("queries", q_prefixes)):
        if len(set(prefixes)) != len(prefixes):  # VDD would write both to one file name
            twice = sorted({p for p in prefixes if prefixes.count(p) > 1})
            raise VPRBenchError(f"{root}: two {side} images get one VDD file name: {twice[0]}")
    jpeg_dir = database_root / DATABASE_FOLDER
    copies = [jpeg_dir / Path(n).with_suffix(".jpg") for n in names]
    _save_all(list(zip([database_root / n for n in names], copies, strict=True)), None)
    _save_all([(s, resized_dir / s.name) for s in sources], SHORT_SIDE)
    database = [c.relative_to(image_root).as_posix() for c in copies]
    xy_db = np.array([_utm_of(p) for p in db_prefixes]).reshape(-1, 2)
    xy_q = np.array([_utm_of(p) for p in q_prefixes]).reshape(-1, 2)
    return GroundTruth(
        database=database,
        queries=queries,
        positives=positives_within_radius(xy_q, xy_db, protocol.threshold),
        source_format="tokyo247-raw",
        positive_rule="utm-radius",
        threshold=protocol.threshold,
        image_root=image_root,
        notes=[
            f"database cutouts re-saved as JPEG into {jpeg_dir} and queries resized to a shorter "
            f"side of {SHORT_SIDE} px into {resized_dir}, as VDD format_tokyo247.py writes them"
        ],
        coordinates={"kind": "utm", "database": xy_db, "queries": xy_q},
        vdd_names={"database": db_prefixes, "queries": q_prefixes},
    )
