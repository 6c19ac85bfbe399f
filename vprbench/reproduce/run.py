"""Reproducing a published entry: whether its data and weights are here (and the command that gets
them when not), then extract and evaluate with exactly the recorded settings through the library
functions `vprbench evaluate` uses (a cached descriptor is never recomputed), measured against
published (vprbench.reproduce.verdict), and for ``differs`` the audit rows of the settings the source
leaves open. Each outcome is a record under ``results/reproduce/``."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from vprbench import __version__
from vprbench.atomic import write_text
from vprbench.errors import VPRBenchError
from vprbench.reproduce.registry import AMBIGUOUS, Entry
from vprbench.reproduce.verdict import CLOSE_POINTS, compare


@dataclass
class Availability:
    data: bool
    data_hint: str  # how to get the data, when it is missing
    weights: str | None  # the spec to load (a file, or a URL already downloaded); None: none needed
    weights_ready: bool
    weights_hint: str  # how to get the weights, when they are missing


def expected_file(entry: Entry) -> tuple[str | None, str | None]:
    """(the official file name, its URL) of the entry's weights, without reading anything."""
    from urllib.parse import urlparse

    from vprbench.models.card import weights_target
    from vprbench.models.registry import get_card

    card = get_card(entry.model)
    if entry.weights is None:
        return None, None
    if entry.weights.startswith("official:"):
        release = card.release(entry.weights.split(":", 1)[1])
        return release.file, release.url
    if entry.weights == "official":
        url = weights_target(card, "official")[0]
        return Path(urlparse(url).path).name, url
    return entry.weights, None


def availability(entry: Entry, data_dir: Path, cache_dir: Path, given: list[Path],
                 download: bool = False) -> Availability:  # fmt: skip
    """What is here for ``entry``: its protocol formatted under ``data_dir`` (the embedded sample
    always), its weights among the ``given`` files (by the official file name or a release's
    aliases), already downloaded under ``<cache>/weights``, or downloadable (``download``)."""
    from vprbench.choices import SAMPLE_NAME
    from vprbench.datasets.formatted import load_formatted
    from vprbench.datasets.protocols import load_registry
    from vprbench.models.registry import get_card
    from vprbench.models.weights import cached_name

    data, data_hint = True, ""
    if entry.protocol != SAMPLE_NAME:
        try:
            load_formatted(entry.protocol, data_dir)
        except VPRBenchError:
            data, data_hint = False, load_registry()[entry.protocol].obtain
    name, url = expected_file(entry)
    if name is None:
        return Availability(data, data_hint, None, True, "")
    card = get_card(entry.model)
    aliases = {name} | {a for r in card.releases if r.file == name for a in r.aliases}
    for path in given:
        if path.name in aliases:
            return Availability(data, data_hint, str(path), True, "")
    if url is not None:
        cached = Path(cache_dir) / "weights" / cached_name(url)
        if cached.is_file() or download:
            return Availability(data, data_hint, url, True, "")
        hint = f"{url} (reproduce --download fetches it), or --weights {name}"
    else:
        note = card.weights.note if card.weights is not None else ""
        hint = f"--weights {name}" + (f" ({note})" if note else "")
    return Availability(data, data_hint, None, False, hint)


def settings_of(entry: Entry, weights: str | None, device: str):
    """The ExtractSettings of the entry's recorded settings."""
    from vprbench.extract.settings import ExtractSettings

    s = entry.settings
    return ExtractSettings(
        model=entry.model,
        weights=weights,
        overrides=s.get("options") or None,
        image_size=tuple(s["image_size"]) if s.get("image_size") else None,
        resize=s.get("resize"),
        antialias=s.get("antialias"),
        batch_size=s.get("batch_size"),
        dtype=s.get("dtype", "fp32"),
        device=device,
    )


def reproduce_entry(entry: Entry, weights: str | None, data_dir: Path, cache_dir: Path,
                    results_dir: Path, device: str = "cpu", close: float = CLOSE_POINTS,
                    audit: bool = True, progress=None, log=lambda _: None) -> dict:  # fmt: skip
    """Run ``entry`` and return (and write) its reproduce record."""
    from vprbench.datasets import manage
    from vprbench.datasets.protocols import load_registry
    from vprbench.evaluate.pca import load_or_fit_pca
    from vprbench.evaluate.run import evaluate
    from vprbench.extract.run import extract

    registry = load_registry()
    settings = settings_of(entry, weights, device)
    dataset = manage.open_dataset(entry.protocol, data_dir, registry)
    result = extract(dataset, settings, cache_dir, progress=progress)
    pca = None
    if entry.settings.get("pca"):
        fit = entry.settings["pca"]
        fitted = extract(manage.open_dataset(fit["fit"], data_dir, registry), settings, cache_dir,
                         progress=progress)  # fmt: skip
        pca = load_or_fit_pca(cache_dir, fitted.descriptors, fit["dim"])
    rerank = None
    if entry.settings.get("rerank"):
        from vprbench.evaluate.rerank import extract_local
        from vprbench.rerank import get_reranker

        reranker = get_reranker(entry.settings["rerank"])
        local = extract_local(dataset, settings, cache_dir, reranker, progress)
        rerank = {"reranker": reranker, "k": entry.settings.get("rerank_k"), "options": {},
                  "local": local.descriptors}  # fmt: skip
    ks = sorted(entry.published)
    try:
        record, path = evaluate(dataset, result, ks, "miss", results_dir, device, pca,
                                tags={"reproduce": entry.id}, rerank=rerank)  # fmt: skip
    except ValueError as exc:
        raise VPRBenchError(f"entry '{entry.id}': {exc}") from exc
    if not record["results"]["ground_truth"]:
        raise VPRBenchError(f"entry '{entry.id}': '{entry.protocol}' has no ground truth here")
    rows, verdict = compare(entry.published, record, close)
    audit_entry = None
    rows_to_audit = [AMBIGUOUS[a] for a in entry.ambiguous if AMBIGUOUS[a]]
    if verdict == "differs" and audit and rows_to_audit:
        audit_entry = _audit(entry, settings, ks, data_dir, cache_dir, results_dir, rows_to_audit,
                             progress, log)  # fmt: skip
    out = {
        "entry": {**asdict(entry), "published": {str(k): v for k, v in entry.published.items()}},
        "weights": weights,
        "rows": rows,
        "verdict": verdict,
        "close_points": close,
        "audit": audit_entry,
        "run_record": str(path),
        "run_id": record["run_id"],
        "official_differences": (record["settings"].get("official") or {}).get("differences", []),
        "vprbench": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    target = Path(results_dir) / "reproduce" / f"{entry.id}__{record['run_id']}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    write_text(target, json.dumps(out, indent=2) + "\n")
    out["path"] = str(target)
    return out


def _audit(entry, settings, ks, data_dir, cache_dir, results_dir, only, progress, log) -> dict:
    """The audit rows of the settings the source leaves open, or why they could not be run."""
    import dataclasses

    from vprbench.evaluate.audit import run_audit

    base = dataclasses.replace(settings, batch_size=None, resize=None, antialias=None)
    try:
        record, path = run_audit(entry.protocol, base, ks, data_dir, cache_dir, results_dir,
                                 only=only, progress=progress, log=log)  # fmt: skip
    except VPRBenchError as exc:
        return {"settings": only, "skipped": str(exc)}
    return {"settings": only, "rows": record["rows"], "path": str(path)}
