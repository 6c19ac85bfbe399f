"""The protocol registry: datasets.yaml, validated field by field.

A Protocol says what an evaluation is (database and query counts, how positives are defined, the official
inference batch size); a formatted dataset on disk (vprbench/datasets/formatted.py) is checked against it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from vprbench.errors import VPRBenchError

POSITIVE_RULES = ("utm-radius", "frame-window", "same-index", "explicit")
# The unit a rule's threshold is in: explicit; a reader that needs another unit converts (metres on VDD's
# frame coordinates: vprbench/datasets/vdd.py).
RULE_UNITS = {
    "utm-radius": ("m",),
    "frame-window": ("frames",),
    "same-index": ("index",),
    "explicit": ("m", "frames", "index"),
}
# Batch-dependent models (cross-image encoder) follow their paper's inference batch sizes. The sizes per
# protocol are in datasets.yaml (``inference_batch_size: {convention: size}``); a protocol a convention
# does not list runs at the convention's default, which is its evaluation script's default:
#   cricavpr  Lu-Feng/CricaVPR parser.py:32 (--infer_batch_size 16); paper: "8 images for Pitts30K and
#             16 images for others" (CricaVPR issue #7)
#   d2vpr     tony19980810/D2VPR parser.py:19 (--infer_batch_size 64); per dataset in eval_encoder.py:46-69
#   supervlad Lu-Feng/SuperVLAD README.md:37, its only test command (in every revision):
#             --infer_batch_size=8 (parser.py:13's default is 16); test.py:24-45 batches the
#             database, then the queries, in dataset order
BATCH_CONVENTIONS = {"cricavpr": 16, "d2vpr": 64, "supervlad": 8}
# Which images share an inference batch (matters only for batch-dependent models). The official scripts
# of both conventions read VDD folders with sorted(glob(...)) (D2VPR datasets_ws.py), so batches follow
# the sort of VDD file names:
#   listed      the formatted order already is the VDD order (Pitts: .mat order; Nordland**: cleaned
#               list sorted by frame; datasets without a VDD version)
#   vdd-pairs   SPED, AmsterTime: VDD names '@0@{int(stem)*1000}@@@@@{stem}@@@@@@@@.jpg', unpadded, so
#               sorted as strings (0, 100, 10, 1, 101, ...) (VDD download_sped.py, download_amstertime.py)
#   vdd-utm     MSLS: VDD names from util.get_dst_image_name (zero-padded UTM easting first), one
#               folder per split for both val cities (VDD format_mapillary.py)
BATCH_ORDERS = ("listed", "vdd-pairs", "vdd-utm")
# How the queries are resampled for intervals and paired tests (vprbench/metrics.py Resampling):
#   iid       independent queries
#   place     queries at the same coordinates are one cluster (the 24 views of a Pittsburgh place)
#   sequence  queries of one capture sequence are one cluster (MSLS seq_info.csv sequence_key)
#   blocks    one sequence in query order: moving blocks of ``length`` queries
CLUSTER_RULES = ("iid", "place", "sequence", "blocks")
GT_FORMATS = ("vdd", "gsv-cities", "vpr-bench", "pnv")
# How `datasets format` reads each benchmark's official files (vprbench/datasets/formatters.py).
FORMATTER_NAMES = (
    "netvlad-mat",
    "msls",
    "msls-full",
    "msls-test",
    "vpr-bench",
    "nordland-pnv",
    "pairs",
    "vdd",
    "tokyo247",
)

_REQUIRED = {
    "description": str,
    "database": dict,
    "queries": dict,
    "ground_truth": dict,
    "positive": dict,
    "licence": str,
    "obtain": str,
}
_OPTIONAL = {
    "inference_batch_size": dict,
    "batch_order": str,
    "source": dict,
    "cluster": dict,
    "image_rule": str,
}


@dataclass(frozen=True)
class Protocol:
    """One named evaluation protocol. Counts of None are not asserted."""

    name: str
    description: str
    database_count: int | None
    queries_count: int | None
    database_layout: str
    queries_layout: str
    gt_source: str
    gt_formats: tuple[str, ...]
    positive_rule: str
    threshold: float
    unit: str
    licence: str
    obtain: str
    # Official inference batch size per batch-dependent model convention (BATCH_CONVENTIONS).
    inference_batch_size: dict[str, int] = field(default_factory=dict)
    batch_order: str = "listed"  # BATCH_ORDERS
    formatter: str | None = None  # None: no official layout to format from (import it instead)
    source_files: tuple[str, ...] = ()
    downloads: tuple[dict, ...] = ()  # archives {name, mirrors, sha256, extract}; () = request-only
    rsync: str | None = None  # a folder served by rsync (rsync://host/module/path) instead
    cities: tuple[str, ...] = ()  # MSLS: the cities to read (default: val's cph and sf)
    cluster_rule: str = "iid"  # CLUSTER_RULES: how queries are resampled for intervals and tests
    cluster_length: int | None = None  # rule blocks: queries per block
    # How the official formatting changed the images (Tokyo 24/7: queries to a shorter side of 480)
    image_rule: str | None = None
    # The name of a database that several protocols share (SF-XL's four query sets): extracted once
    database_shared: str | None = None
    # Where a count is not asserted: what papers or logs report, with the source (shown, never checked)
    database_reported: str | None = None
    queries_reported: str | None = None

    def cluster_spec(self) -> str:
        """The protocol's default cluster rule as the command line writes it: 'place', 'blocks:10'."""
        if self.cluster_rule == "blocks":
            return f"blocks:{self.cluster_length}"
        return self.cluster_rule

    def positive_summary(self) -> str:
        """How positives are defined, in a few words: '<= 25 m', '+/-10 frames', 'same index'."""
        if self.positive_rule == "utm-radius":
            return f"<= {self.threshold:g} {self.unit}"
        if self.positive_rule == "frame-window":
            return f"+/-{self.threshold:g} {self.unit}"
        if self.positive_rule == "same-index":
            return "same index"
        return f"listed (+/-{self.threshold:g} {self.unit})"

    def official_batch_size(self, convention: str) -> tuple[int, str]:
        """(size, where it comes from) for a batch-dependent model of ``convention``."""
        if convention not in BATCH_CONVENTIONS:
            raise VPRBenchError(
                f"unknown batch-size convention {convention!r}; expected one of "
                f"{sorted(BATCH_CONVENTIONS)}"
            )
        if convention in self.inference_batch_size:
            return self.inference_batch_size[convention], f"{convention} protocol for {self.name}"
        return BATCH_CONVENTIONS[convention], f"{convention} default for {self.name}"


def default_registry_path() -> Path:
    """The registry file: ``$VPRBENCH_DATASETS_YAML`` if set, else the one shipped in the package."""
    if os.environ.get("VPRBENCH_DATASETS_YAML"):
        return Path(os.environ["VPRBENCH_DATASETS_YAML"])
    return Path(str(resources.files("vprbench") / "datasets.yaml"))


def _field(entry: dict, key: str, kind: type | tuple, where: str, optional: bool = False) -> Any:
    if key not in entry:
        if optional:
            return None
        raise VPRBenchError(f"{where}: missing field '{key}'")
    value = entry[key]
    if optional and value is None:
        return None
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise VPRBenchError(f"{where}: field '{key}' must be {names}, got {value!r}")
    return value


def _check_keys(entry: dict, allowed: set[str], where: str) -> None:
    unknown = sorted(set(entry) - allowed)
    if unknown:
        raise VPRBenchError(f"{where}: unknown field(s) {unknown}; allowed: {sorted(allowed)}")


def _parse_entry(name: str, entry: Any, source: Path) -> Protocol:
    where = f"{source}: protocols.{name}"
    if not isinstance(entry, dict):
        raise VPRBenchError(f"{where}: expected a mapping, got {type(entry).__name__}")
    _check_keys(entry, set(_REQUIRED) | set(_OPTIONAL), where)
    fields = {key: _field(entry, key, kind, where) for key, kind in _REQUIRED.items()}
    sides = {}
    for side in ("database", "queries"):
        part = fields[side]
        keys = {"count", "layout", "reported"} | ({"shared"} if side == "database" else set())
        _check_keys(part, keys, f"{where}.{side}")
        count = _field(part, "count", int, f"{where}.{side}", optional=True)
        if count is not None and count <= 0:
            raise VPRBenchError(f"{where}.{side}: field 'count' must be positive, got {count}")
        reported = _field(part, "reported", str, f"{where}.{side}", optional=True)
        if reported is not None and not reported.strip():
            raise VPRBenchError(
                f"{where}.{side}: field 'reported' must say what is reported, got ''"
            )
        if reported is not None and count is not None:
            raise VPRBenchError(
                f"{where}.{side}: field 'reported' is for a count that is not asserted "
                f"(count: null); this count is asserted ({count})"
            )
        sides[side] = (count, _field(part, "layout", str, f"{where}.{side}"), reported)
    gt = fields["ground_truth"]
    _check_keys(gt, {"source", "formats"}, f"{where}.ground_truth")
    formats = _field(gt, "formats", list, f"{where}.ground_truth")
    bad = [f for f in formats if f not in GT_FORMATS]
    if bad:
        raise VPRBenchError(
            f"{where}.ground_truth: unknown format(s) {bad}; expected some of {list(GT_FORMATS)}"
        )
    pos = fields["positive"]
    _check_keys(pos, {"rule", "threshold", "unit"}, f"{where}.positive")
    rule = _field(pos, "rule", str, f"{where}.positive")
    if rule not in POSITIVE_RULES:
        raise VPRBenchError(
            f"{where}.positive: field 'rule' must be one of {list(POSITIVE_RULES)}, got {rule!r}"
        )
    threshold = _field(pos, "threshold", (int, float), f"{where}.positive")
    if threshold < 0:
        raise VPRBenchError(f"{where}.positive: field 'threshold' must be >= 0, got {threshold}")
    unit = _field(pos, "unit", str, f"{where}.positive")
    if unit not in RULE_UNITS[rule]:
        raise VPRBenchError(
            f"{where}.positive: field 'unit' of rule {rule} must be one of "
            f"{list(RULE_UNITS[rule])}, got {unit!r}"
        )
    source = _parse_source(entry.get("source"), f"{where}.source")
    batches = _field(entry, "inference_batch_size", dict, where, optional=True) or {}
    for convention, size in batches.items():
        if convention not in BATCH_CONVENTIONS:
            raise VPRBenchError(
                f"{where}.inference_batch_size: unknown convention {convention!r}; expected some of "
                f"{sorted(BATCH_CONVENTIONS)}"
            )
        if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
            raise VPRBenchError(
                f"{where}.inference_batch_size.{convention}: must be a positive integer, got {size!r}"
            )
    order = _field(entry, "batch_order", str, where, optional=True) or "listed"
    if order not in BATCH_ORDERS:
        raise VPRBenchError(
            f"{where}: field 'batch_order' must be one of {list(BATCH_ORDERS)}, got {order!r}"
        )
    cluster_rule, cluster_length = _parse_cluster(entry.get("cluster"), f"{where}.cluster")
    return Protocol(
        name=name,
        description=fields["description"].strip(),
        database_count=sides["database"][0],
        queries_count=sides["queries"][0],
        database_layout=sides["database"][1],
        queries_layout=sides["queries"][1],
        gt_source=_field(gt, "source", str, f"{where}.ground_truth"),
        gt_formats=tuple(formats),
        positive_rule=rule,
        threshold=float(threshold),
        unit=unit,
        licence=fields["licence"],
        obtain=fields["obtain"],
        inference_batch_size=dict(batches),
        batch_order=order,
        cluster_rule=cluster_rule,
        cluster_length=cluster_length,
        image_rule=_field(entry, "image_rule", str, where, optional=True),
        database_shared=_field(
            fields["database"], "shared", str, f"{where}.database", optional=True
        ),
        database_reported=sides["database"][2],
        queries_reported=sides["queries"][2],
        **source,
    )


def _parse_cluster(cluster: dict | None, where: str) -> tuple[str, int | None]:
    """The optional ``cluster: {rule, length}`` block; absent means independent queries."""
    if cluster is None:
        return "iid", None
    if not isinstance(cluster, dict):
        raise VPRBenchError(f"{where}: expected a mapping {{rule, length}}")
    _check_keys(cluster, {"rule", "length"}, where)
    rule = _field(cluster, "rule", str, where)
    if rule not in CLUSTER_RULES:
        raise VPRBenchError(
            f"{where}: field 'rule' must be one of {list(CLUSTER_RULES)}, got {rule!r}"
        )
    length = _field(cluster, "length", int, where, optional=True)
    if (rule == "blocks") != (length is not None):
        raise VPRBenchError(
            f"{where}: field 'length' (queries per block, >= 1) goes with rule blocks and only with it"
        )
    if length is not None and length < 1:
        raise VPRBenchError(f"{where}: field 'length' must be >= 1, got {length}")
    return rule, length


def _parse_source(source: dict | None, where: str) -> dict:
    """The optional ``source:`` block: formatter, the files it needs, downloadable archives."""
    if source is None:
        return {}
    if not isinstance(source, dict):
        raise VPRBenchError(f"{where}: expected a mapping")
    _check_keys(source, {"formatter", "files", "download", "rsync", "cities"}, where)
    formatter = _field(source, "formatter", str, where)
    if formatter not in FORMATTER_NAMES:
        raise VPRBenchError(
            f"{where}: field 'formatter' must be one of {list(FORMATTER_NAMES)}, got {formatter!r}"
        )
    files = _field(source, "files", list, where)
    archives = _field(source, "download", list, where, optional=True) or []
    for i, archive in enumerate(archives):
        here = f"{where}.download[{i}]"
        if not isinstance(archive, dict):
            raise VPRBenchError(f"{here}: expected a mapping")
        _check_keys(archive, {"name", "mirrors", "sha256", "extract", "target"}, here)
        _field(archive, "name", str, here)
        mirrors = _field(archive, "mirrors", list, here)
        if not mirrors or not all(isinstance(m, str) for m in mirrors):
            raise VPRBenchError(f"{here}: field 'mirrors' must be a non-empty list of URLs")
        sha = _field(archive, "sha256", str, here, optional=True)
        if sha is not None and len(sha) != 64:
            raise VPRBenchError(f"{here}: field 'sha256' must be 64 hex digits")
        _field(archive, "extract", bool, here, optional=True)
        target = _field(archive, "target", str, here, optional=True)
        if target is not None and (Path(target).is_absolute() or ".." in Path(target).parts):
            raise VPRBenchError(f"{here}: field 'target' must be a relative folder, got {target!r}")
    cities = _field(source, "cities", list, where, optional=True) or []
    rsync = _field(source, "rsync", str, where, optional=True)
    if rsync is not None and (not rsync.startswith("rsync://") or archives):
        raise VPRBenchError(
            f"{where}: field 'rsync' must be an rsync:// URL, and without 'download'"
        )
    return {
        "rsync": rsync,
        "formatter": formatter,
        "source_files": tuple(files),
        "downloads": tuple(archives),
        "cities": tuple(cities),
    }


def load_registry(path: str | os.PathLike | None = None) -> dict[str, Protocol]:
    """Read and validate a protocol registry file; returns protocols by name, in file order."""
    source = Path(path) if path else default_registry_path()
    from vprbench.yamlfile import read_yaml

    raw = read_yaml(source, "protocol registry")
    if not isinstance(raw, dict) or not isinstance(raw.get("protocols"), dict):
        raise VPRBenchError(f"{source}: expected a top-level mapping 'protocols:'")
    _check_keys(raw, {"protocols"}, str(source))
    registry = {name: _parse_entry(name, entry, source) for name, entry in raw["protocols"].items()}
    _check_shared_databases(registry, source)
    return registry


def count_text(count: int | None, reported: str | None = None) -> str:
    """A registry count as ``datasets info`` and the docs show it: with thousands separators, or
    "not asserted" (with what is reported elsewhere, when the registry says)."""
    if count is not None:
        return f"{count:,}"
    return "not asserted" if reported is None else f"not asserted; reported: {reported}"


def _check_shared_databases(registry: dict[str, Protocol], source: Path) -> None:
    """Protocols that name one shared database must describe the same database."""

    def described(q: Protocol) -> tuple:
        return q.database_count, q.database_layout, q.database_reported

    def text(q: Protocol) -> str:
        return f"{count_text(q.database_count, q.database_reported)} images ({q.database_layout})"

    first: dict[str, Protocol] = {}
    for p in registry.values():
        if p.database_shared is None:
            continue
        other = first.setdefault(p.database_shared, p)
        if described(other) != described(p):
            raise VPRBenchError(
                f"{source}: protocols.{p.name}.database: shared database '{p.database_shared}' is "
                f"{text(other)} in protocols.{other.name}, but {text(p)} here"
            )


def sharing_database(protocol: Protocol, registry: dict[str, Protocol]) -> list[str]:
    """The other protocols whose database is ``protocol``'s shared one."""
    if protocol.database_shared is None:
        return []
    return [n for n, p in registry.items()
            if p.database_shared == protocol.database_shared and n != protocol.name]  # fmt: skip


def get_protocol(name: str, registry: dict[str, Protocol] | None = None) -> Protocol:
    """Look a protocol up by name; the error lists the valid names."""
    registry = registry if registry is not None else load_registry()
    if name not in registry:
        raise VPRBenchError(f"unknown protocol '{name}'; valid names: {', '.join(registry)}")
    return registry[name]
