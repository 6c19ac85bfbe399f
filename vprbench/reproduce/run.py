"""Reproducing a published entry: whether its data and weights are here (and the command that gets
them when not), then extract and evaluate with exactly the recorded settings through the library
functions `vprbench evaluate` uses (a cached descriptor is never recomputed), measured against
published (vprbench.reproduce.verdict), and for ``differs`` the audit rows of the settings the source
leaves open. Each outcome is a record under ``results/reproduce/``."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
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
    weights: (
        str | None
    )  # the spec to load (a file, or the entry's official spec); None: none needed
    weights_ready: bool
    weights_hint: str  # how to get the weights, when they are missing


def expected_file(entry: Entry) -> tuple[str | None, str | None, str]:
    """(the official file name, its URL, its note) of the entry's weights, without reading anything;
    ``official`` under the entry's options (CosPlace's and EigenPlaces' files depend on dim)."""
    from urllib.parse import urlparse

    from vprbench.models.registry import get_card, resolve_options

    card = get_card(entry.model)
    note = card.weights.note if card.weights is not None else ""
    if entry.weights is None:
        return None, None, ""
    if entry.weights.startswith("official:"):
        release = card.release(entry.weights.split(":", 1)[1])
        return release.file, release.url, release.note or note
    if entry.weights == "official":
        url = card.official_url(resolve_options(card, entry.settings.get("options") or {}))
        return Path(urlparse(url).path).name, url, note
    return entry.weights, None, note


def availability(entry: Entry, data_dir: Path, cache_dir: Path, given: list[Path],
                 download: bool = False) -> Availability:  # fmt: skip
    """What is here for ``entry``: its protocol (and its PCA's fit protocol) formatted under
    ``data_dir`` with ground truth (the embedded sample always), its weights among the ``given``
    files (by the official file name or a release's aliases), already downloaded under
    ``<cache>/weights``, or downloadable (``download``)."""
    from vprbench.choices import SAMPLE_NAME
    from vprbench.datasets.formatted import load_formatted
    from vprbench.datasets.protocols import load_registry
    from vprbench.models.registry import get_card
    from vprbench.models.weights import cached_name

    data, data_hint = True, ""
    needed = [entry.protocol] + (
        [entry.settings["pca"]["fit"]] if entry.settings.get("pca") else []
    )
    for protocol in dict.fromkeys(needed):
        if protocol == SAMPLE_NAME:
            continue
        try:
            formatted = load_formatted(protocol, data_dir)
        except VPRBenchError:
            data, data_hint = False, f"{protocol}: {load_registry()[protocol].obtain}"
            break
        if protocol == entry.protocol and not any(p.size for p in formatted.positives):
            data, data_hint = False, f"{protocol}: formatted without ground truth (none released)"
            break
    name, url, note = expected_file(entry)
    if name is None:
        return Availability(data, data_hint, None, True, "")
    card = get_card(entry.model)
    aliases = {name} | {a for r in card.releases if r.file == name for a in r.aliases}
    for path in given:
        if path.name in aliases:
            return Availability(data, data_hint, str(path), True, "")
    if url is not None:
        cached = Path(cache_dir) / "weights" / cached_name(url)
        if cached.is_file() or download:  # the builder finds it there (or downloads it)
            return Availability(data, data_hint, entry.weights, True, "")
        hint = f"{url} (reproduce --download fetches it), or --weights {name}"
    else:
        hint = f"--weights {name}" + (f" ({note})" if note else "")
    return Availability(data, data_hint, None, False, hint)


def settings_of(entry: Entry, weights: str | None, device: str):
    """The ExtractSettings of the entry's recorded settings (absent: the card's, as the registry's
    docstring says; dtype: the card's published precision)."""
    from vprbench.extract.settings import ExtractSettings
    from vprbench.models.registry import get_card

    s = entry.settings
    return ExtractSettings(
        model=entry.model,
        weights=weights,
        overrides=s.get("options") or None,
        image_size=tuple(s["image_size"]) if s.get("image_size") else None,
        resize=s.get("resize"),
        antialias=s.get("antialias"),
        batch_size=s.get("batch_size"),
        dtype=s.get("dtype") or get_card(entry.model).dtype,
        device=device,
    )


def reproduce_entry(entry: Entry, weights: str | None, data_dir: Path, cache_dir: Path,
                    results_dir: Path, device: str = "cpu", close: float = CLOSE_POINTS,
                    audit: bool = True, progress=None, log=lambda _: None,
                    registry_path: Path | None = None) -> dict:  # fmt: skip
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
        record, path = evaluate(dataset, result, ks, entry.settings.get("no_positive_policy", "miss"),
                                results_dir, device, pca, per_city=entry.settings.get("per_city", False),
                                tags={"reproduce": entry.id}, rerank=rerank)  # fmt: skip
    except ValueError as exc:
        raise VPRBenchError(f"entry '{entry.id}': {exc}") from exc
    if not record["results"]["ground_truth"]:
        raise VPRBenchError(f"entry '{entry.id}': '{entry.protocol}' has no ground truth here")
    rows, verdict = compare(entry.published, record, close)
    audit_entry = None
    if verdict == "differs" and audit and entry.ambiguous:
        audit_entry = _audit(entry, settings, ks, data_dir, cache_dir, results_dir, progress, log)
    out = {
        "entry": entry.as_json(),
        "weights": weights,
        "rows": rows,
        "verdict": verdict,
        "close_points": close,
        "audit": audit_entry,
        "run_record": str(path),
        "run_id": record["run_id"],
        "official_differences": (record["settings"].get("official") or {}).get("differences", []),
        "registry": str(registry_path) if registry_path else None,
        "vprbench": __version__,
        "created": datetime.now(timezone.utc).isoformat(),  # sortable: the report takes the latest
    }
    target = Path(results_dir) / "reproduce" / f"{entry.id}__{record['run_id']}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    write_text(target, json.dumps(out, indent=2) + "\n")
    out["path"] = str(target)
    return out


BASELINE = (
    "the card's settings on the protocol: the global stage, without PCA, the protocol's "
    "batch size and the card's resize (vprbench audit's baseline)"
)


def _audit(entry, settings, ks, data_dir, cache_dir, results_dir, progress, log) -> dict:
    """The audit rows of the settings the source leaves open, what no row measures, or why the
    audit could not run."""
    import dataclasses

    from vprbench.evaluate.audit import run_audit

    only, not_audited = [], []
    for setting in entry.ambiguous:
        row = AMBIGUOUS[setting]
        if row is None:
            not_audited.append({"setting": setting, "reason": "no audit row measures it"})
        elif row == "dtype" and settings.dtype != "fp32":
            not_audited.append({"setting": setting, "reason": f"the audit's dtype row compares "
                                f"fp32 with bf16; the entry runs in {settings.dtype}"})  # fmt: skip
        else:
            only.append(row)
    out = {"settings": only, "not_audited": not_audited, "baseline": BASELINE}
    if not only:
        return out
    base = dataclasses.replace(settings, batch_size=None, resize=None, antialias=None)
    try:
        record, path = run_audit(entry.protocol, base, ks, data_dir, cache_dir, results_dir,
                                 only=only, progress=progress, log=log)  # fmt: skip
    except VPRBenchError as exc:
        return {**out, "skipped": str(exc)}
    return {**out, "rows": record["rows"], "path": str(path)}
