"""Which queries belong together: the cluster rule by which a run's intervals and paired tests resample
its queries (vprbench/metrics.py Resampling), chosen per protocol in datasets.yaml (``cluster``) or on
the command line (``--cluster``), and recorded in every run record and table.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vprbench.datasets.formatted import FormattedDataset, load_coordinates, load_sequences
from vprbench.datasets.protocols import CLUSTER_RULES
from vprbench.errors import VPRBenchError
from vprbench.evaluate.metrics import IID, LEVEL, Resampling


def parse_cluster(text: str) -> tuple[str | None, int | None]:
    """``"protocol"`` -> (None, None); ``"place"`` -> ("place", None); ``"blocks:10"`` -> ("blocks", 10)."""
    text = text.strip()
    if text == "protocol":
        return None, None
    rule, _, length = text.partition(":")
    if rule not in CLUSTER_RULES:
        raise VPRBenchError(
            f"--cluster: expected 'protocol', {', '.join(repr(r) for r in CLUSTER_RULES[:-1])} or "
            f"'blocks:L', got {text!r}"
        )
    if rule == "blocks":
        if not length.isdigit() or int(length) < 1:
            raise VPRBenchError(f"--cluster blocks needs a length, e.g. blocks:10, got {text!r}")
        return rule, int(length)
    if length:
        raise VPRBenchError(f"--cluster {rule} takes no length, got {text!r}")
    return rule, None


def query_clusters(dataset: FormattedDataset, spec: str = "protocol") -> dict:
    """The cluster rule of ``dataset``'s queries: ``spec`` ('protocol' for the protocol's own, or a
    rule as :func:`parse_cluster` reads it). Returns {rule, length, clusters ([Nq] int or None),
    source, note}; where the data a rule needs is missing (no coordinates, no sequences) the rule
    falls back to independent queries, and ``note`` says so."""
    rule, length = parse_cluster(spec)
    source = "--cluster"
    if rule is None:
        from vprbench.datasets.protocols import get_protocol, load_registry

        name = dataset.manifest.get("protocol")
        registry = load_registry()
        if name in registry:
            protocol = get_protocol(name, registry)
            rule, length = protocol.cluster_rule, protocol.cluster_length
            source = f"protocol {name} (datasets.yaml)"
        else:
            rule, source = "iid", "default: the dataset has no registered protocol"
    out = {"rule": rule, "length": length, "clusters": None, "source": source, "note": None}
    n = len(dataset.queries)
    if rule == "place":
        coords = load_coordinates(dataset)
        if coords is None or coords["kind"] != "utm":
            return _fallback(out, f"rule 'place' needs the queries' UTM coordinates, which "
                                  f"'{dataset.name}' does not store")  # fmt: skip
        # the views of one place share their coordinates (Pitts: 24 cutouts of one panorama)
        keys = np.round(np.asarray(coords["queries"], dtype=np.float64), 2)
        out["clusters"] = np.unique(keys, axis=0, return_inverse=True)[1].reshape(-1)
    elif rule == "sequence":
        sequences = load_sequences(dataset)
        if sequences is None:
            return _fallback(out, f"rule 'sequence' needs each query's capture sequence (MSLS "
                                  f"seq_info.csv), which '{dataset.name}' does not store: format it "
                                  f"again from the MSLS folders")  # fmt: skip
        out["clusters"] = np.unique(sequences, return_inverse=True)[1].reshape(-1)
    elif rule == "blocks" and length > n:
        raise VPRBenchError(f"--cluster blocks:{length}: longer than the {n} queries")
    return out


def _fallback(out: dict, why: str) -> dict:
    return {**out, "rule": "iid", "length": None, "requested": out["rule"],
            "note": f"{why}; intervals and tests assume independent queries"}  # fmt: skip


def resampling_of(info: dict, evaluated: np.ndarray) -> Resampling:
    """The Resampling of the evaluated queries under ``info`` (from :func:`query_clusters`, with
    ``clusters`` over all queries)."""
    rule = info["rule"]
    if rule in ("place", "sequence"):
        return Resampling(rule, clusters=np.asarray(info["clusters"])[np.asarray(evaluated, bool)])
    if rule == "blocks":
        n = int(np.asarray(evaluated, bool).sum())
        if int(info["length"]) > n:
            raise VPRBenchError(
                f"blocks of {info['length']} queries: longer than the {n} evaluated queries"
            )
        return Resampling("blocks", length=int(info["length"]))
    return IID


def record_entry(info: dict, resampling: Resampling, n_evaluated: int) -> dict:
    """What a run record says about its intervals: the rule, where it came from, the methods."""
    entry = {
        "rule": info["rule"],
        "length": info["length"],
        "clusters": None
        if resampling.rule in ("iid", "blocks")
        else int(resampling.groups(n_evaluated).max()) + 1,
        "description": resampling.describe(n_evaluated),
        "source": info["source"],
        "level": LEVEL,
        **resampling.method(),
    }
    if info.get("note"):
        entry["requested"] = info.get("requested")
        entry["note"] = info["note"]
    units = resampling.units(n_evaluated)
    if resampling.rule != "iid" and units < Resampling.FEW_UNITS:
        entry["warning"] = (
            f"only {units} {'blocks' if resampling.rule == 'blocks' else 'clusters'}: the percentile "
            "bootstrap interval tends to be too narrow with fewer than about "
            f"{Resampling.FEW_UNITS} (the sign-flip test keeps its size)"
        )
    return entry


def canonical(spec: str, dataset: FormattedDataset) -> str | None:
    """``spec`` as a run id keys it: None for the protocol's own rule (written out or not), else the
    rule as :func:`parse_cluster` reads it ('blocks:10', 'iid')."""
    rule, length = parse_cluster(spec)
    if rule is None:
        return None
    default = query_clusters(dataset, "protocol")
    if default.get("note") is None and (default["rule"], default["length"]) == (rule, length):
        return None
    return f"blocks:{length}" if rule == "blocks" else rule


def run_resampling(record: dict, evaluated: np.ndarray) -> Resampling:
    """The Resampling a run record was evaluated with (its cluster ids from the predictions file); a
    record from before cluster rules existed assumed independent queries."""
    info = (record.get("results") or {}).get("resampling")
    if not info:
        return IID
    clusters = None
    if info["rule"] in ("place", "sequence"):
        path = Path(record["files"]["predictions"])
        try:
            with np.load(path) as z:
                clusters = z["clusters"]
        except (OSError, ValueError, KeyError) as exc:
            raise VPRBenchError(f"{path}: cannot read the run's query clusters ({exc})") from None
    return resampling_of({**info, "clusters": clusters}, evaluated)


def describe_record(record: dict) -> str:
    """``clusters of views of one place (284 clusters)`` or ``independent queries``: for captions."""
    info = (record.get("results") or {}).get("resampling")
    if not info:
        return "independent queries"
    return info["description"]


def same_resampling(
    a: Resampling, b: Resampling, labels: tuple[str, str] = ("A", "B")
) -> Resampling:
    """``a`` if both runs resample their queries alike; refuses otherwise (a paired test needs one
    rule for both)."""
    same = a.rule == b.rule and a.length == b.length
    if same and a.clusters is not None:
        same = np.array_equal(np.asarray(a.clusters), np.asarray(b.clusters))
    if not same:
        raise VPRBenchError(
            f"runs {labels[0]} and {labels[1]} resample their queries differently "
            f"({a.describe()} vs {b.describe()}): evaluate both with the same --cluster"
        )
    return a
