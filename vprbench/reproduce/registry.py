"""The registry of published results, ``vprbench/published.yaml`` (``VPRBENCH_PUBLISHED_YAML`` or
``--registry`` for another file), validated like datasets.yaml: every key, type and name is checked
against the model cards, the protocols and the re-rankers, and an error names the file and line.

    format: 1
    tables:                                  # named sets of entries: `reproduce --table NAME`
      d2vpr-readme: {description: ..., source: ..., entries: [ENTRY, ...]}
    entries:
      ENTRY:
        model: d2vpr                         # a registered model
        weights: official:finetune_no_encoder   # official, official:RELEASE, a file name; null: none
        protocol: pitts30k-test              # a registered protocol
        published: {1: 91.7, 5: 95.8}        # recall@k in percent, as printed
        source: {where: "README.md:57 (commit abc1234)", third_party: null}
        settings:                            # what produced the number (null or absent: the card's)
          stage: global                      # or two-stage (with rerank)
          rerank: null                       # a registered re-ranker of this model
          rerank_k: null
          image_size: null                   # [H, W]
          resize: null                       # where the resize happens (pil, uint8, unit, normalised)
          antialias: null
          dtype: fp32
          batch_size: null                   # batch-dependent models
          pca: null                          # {dim: 4096, fit: PROTOCOL, official: "..."}
          options: {}                        # model switches
          per_city: false                    # MSLS: each city searched alone
          no_positive_policy: miss           # or exclude
        ambiguous: [batch_size]              # settings the source leaves open: audited on "differs"
        note: ""
    no_published: {pixels: "a baseline of vprbench's own"}

No torch here: `reproduce --list` and every check read the cards."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from vprbench.errors import VPRBenchError

TOP_KEYS = {"format", "tables", "entries", "no_published"}
ENTRY_KEYS = {
    "model",
    "weights",
    "protocol",
    "published",
    "source",
    "settings",
    "ambiguous",
    "note",
}
SOURCE_KEYS = {"where", "third_party"}
SETTING_KEYS = {"stage", "rerank", "rerank_k", "image_size", "resize", "antialias", "dtype",
                "batch_size", "pca", "options", "per_city", "no_positive_policy"}  # fmt: skip
STAGES = ("global", "two-stage")
# what a source may leave open, and the audit row (vprbench.evaluate.audit.SETTINGS) that measures it
# (None: no audit row measures it; pca_fit: the audit's pca row compares with and without PCA)
AMBIGUOUS = {"batch_size": "batch-size", "resize": "resize", "dtype": "dtype", "pca_fit": None,
             "image_size": "image-size", "dataset_version": None}  # fmt: skip


@dataclass(frozen=True)
class Entry:
    """One published number set: a model's released file on a protocol."""

    id: str
    model: str
    weights: str | None
    protocol: str
    published: dict[int, float]  # percent
    where: str
    third_party: str | None
    settings: dict  # the keys of SETTING_KEYS that were given
    ambiguous: tuple[str, ...] = ()
    note: str = ""
    line: int = 0

    @property
    def stage(self) -> str:
        return self.settings.get("stage") or "global"

    def as_json(self) -> dict:
        """The entry as records and --json write it (JSON keys are text: published {"1": 91.7})."""
        return {**asdict(self), "published": {str(k): v for k, v in self.published.items()}}


@dataclass(frozen=True)
class Table:
    name: str
    description: str
    source: str
    entries: tuple[str, ...]


@dataclass
class Registry:
    path: Path
    entries: dict[str, Entry] = field(default_factory=dict)
    tables: dict[str, Table] = field(default_factory=dict)
    no_published: dict[str, str] = field(default_factory=dict)

    def table(self, name: str) -> Table:
        if name not in self.tables:
            raise VPRBenchError(f"--table: unknown table {name!r}; {self.path} has "
                                f"{', '.join(sorted(self.tables)) or 'none'}")  # fmt: skip
        return self.tables[name]


def default_registry_path() -> Path:
    return Path(
        os.environ.get("VPRBENCH_PUBLISHED_YAML") or Path(__file__).parents[1] / "published.yaml"
    )


def load_published(path: str | os.PathLike | None = None) -> Registry:
    """Read and validate a published-results registry (see the module docstring)."""
    from vprbench.yamlfile import read_yaml_with_lines

    source = Path(path) if path else default_registry_path()
    raw, lines = read_yaml_with_lines(source, "published-results registry")

    def where(*keys) -> str:
        for n in range(len(keys), 0, -1):
            if keys[:n] in lines:
                return f"{source}:{lines[keys[:n]]}"
        return str(source)

    def fail(keys: tuple, message: str):
        raise VPRBenchError(f"{where(*keys)}: {message}")

    if not isinstance(raw, dict):
        fail((), f"a mapping with keys {sorted(TOP_KEYS)}")
    for key in raw:
        if key not in TOP_KEYS:
            fail((key,), f"unknown key '{key}'; expected {sorted(TOP_KEYS)}")
    if raw.get("format") != 1:
        fail(("format",), f"format must be 1, got {raw.get('format')!r}")
    from vprbench.datasets.protocols import load_registry

    protocols = load_registry()
    registry = Registry(source)
    for entry_id, body in (raw.get("entries") or {}).items():
        registry.entries[entry_id] = _entry(entry_id, body, fail,
                                            lines.get(("entries", entry_id), 0), protocols)  # fmt: skip
    for name, body in (raw.get("tables") or {}).items():
        keys = ("tables", name)
        if not isinstance(body, dict) or set(body) - {"description", "source", "entries"}:
            fail(keys, "a table is {description, source, entries: [ENTRY, ...]}")
        members = body.get("entries") or []
        if not isinstance(members, list) or not members:
            fail(keys + ("entries",), "a table lists at least one entry")
        for i, member in enumerate(members):
            if member not in registry.entries:
                fail(keys + ("entries", i), f"no entry named {member!r}")
        registry.tables[name] = Table(name, str(body.get("description") or ""),
                                      str(body.get("source") or ""), tuple(members))  # fmt: skip
    with_entries = {entry.model for entry in registry.entries.values()}
    for model, reason in (raw.get("no_published") or {}).items():
        _check_model(model, ("no_published", model), fail)
        if model in with_entries:
            fail(("no_published", model), f"model '{model}' has entries; a reason is only for a model "
                 "without any")  # fmt: skip
        registry.no_published[model] = str(reason)
    return registry


def _check_model(name, keys, fail):
    from vprbench.models.registry import get_card

    try:
        return get_card(name)
    except VPRBenchError as exc:
        fail(keys, str(exc))


def _entry(entry_id: str, body, fail, line: int, protocols: dict) -> Entry:
    keys = ("entries", entry_id)
    if not isinstance(body, dict):
        fail(keys, f"entry '{entry_id}' must be a mapping with keys {sorted(ENTRY_KEYS)}")
    for key in body:
        if key not in ENTRY_KEYS:
            fail(keys + (key,), f"unknown key '{key}'; expected {sorted(ENTRY_KEYS)}")
    for key in ("model", "protocol", "published", "source"):
        if key not in body:
            fail(keys, f"entry '{entry_id}' needs '{key}'")
    card = _check_model(body["model"], keys + ("model",), fail)
    if body["protocol"] not in protocols:
        fail(keys + ("protocol",), f"unknown protocol {body['protocol']!r}")
    weights = body.get("weights")
    _check_weights(card, weights, keys + ("weights",), fail)
    published = body["published"]
    if not isinstance(published, dict) or not published:
        fail(keys + ("published",), "published is a mapping of k to recall@k in percent")
    for k, value in published.items():  # keys arrive as text (the line-keeping reader)
        if (
            not (str(k).isdigit() and int(k) >= 1)
            or isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not (0 <= value <= 100)
        ):
            fail(keys + ("published", k), f"published {k!r}: {value!r}: expected k >= 1 and a "
                 "recall in percent (0-100)")  # fmt: skip
    source = body["source"]
    if not isinstance(source, dict) or set(source) - SOURCE_KEYS or not source.get("where"):
        fail(keys + ("source",), "source is {where: ..., third_party: null or who}")
    settings = body.get("settings") or {}
    _check_settings(card, settings, protocols, keys + ("settings",), fail)
    ambiguous = body.get("ambiguous") or []
    if not isinstance(ambiguous, list) or set(ambiguous) - set(AMBIGUOUS):
        fail(keys + ("ambiguous",), f"ambiguous lists some of {sorted(AMBIGUOUS)}")
    return Entry(id=entry_id, model=body["model"], weights=weights, protocol=body["protocol"],
                 published={int(k): float(v) for k, v in published.items()},
                 where=str(source["where"]), third_party=source.get("third_party"),
                 settings={k: v for k, v in settings.items() if v is not None},
                 ambiguous=tuple(ambiguous), note=str(body.get("note") or ""), line=line)  # fmt: skip


def _check_weights(card, weights, keys, fail) -> None:
    has_weights = card.weights is not None or card.releases
    if weights is None:
        if has_weights:
            fail(keys, f"model '{card.name}' has released weights: name them (official, "
                 "official:RELEASE or the file)")  # fmt: skip
        return
    if not isinstance(weights, str):
        fail(keys, f"weights must be a string, got {weights!r}")
    if "/" in weights or "\\" in weights:
        fail(keys, f"weights {weights!r}: name the file (its official name), not a path")
    if weights.startswith("official:"):
        try:
            card.release(weights.split(":", 1)[1])
        except VPRBenchError as exc:
            fail(keys, str(exc))
    elif weights == "official" and (card.weights is None or card.weights.url is None):
        fail(keys, f"model '{card.name}' has no official URL: name the release or the file")


def _check_settings(card, settings, protocols, keys, fail) -> None:
    from vprbench.choices import DTYPE_NAMES, RESIZE_STAGES
    from vprbench.models.registry import check_model_request

    if not isinstance(settings, dict):
        fail(keys, f"settings is a mapping with keys {sorted(SETTING_KEYS)}")
    for key in settings:
        if key not in SETTING_KEYS:
            fail(keys + (key,), f"unknown setting '{key}'; expected {sorted(SETTING_KEYS)}")
    stage, rerank = settings.get("stage") or "global", settings.get("rerank")
    if stage not in STAGES:
        fail(keys + ("stage",), f"stage must be one of {list(STAGES)}, got {stage!r}")
    if (stage == "two-stage") != (rerank is not None):
        fail(keys + ("stage",), "a two-stage number names its re-ranker (settings.rerank), and "
             "only a two-stage number has one")  # fmt: skip
    if rerank is not None:
        from vprbench.rerank import get_reranker

        try:
            reranker = get_reranker(rerank)
        except VPRBenchError as exc:
            fail(keys + ("rerank",), str(exc))
        if reranker.model != card.name:
            fail(keys + ("rerank",), f"re-ranker '{rerank}' matches the local features of "
                 f"'{reranker.model}', not of '{card.name}'")  # fmt: skip
    if settings.get("rerank_k") is not None and rerank is None:
        fail(keys + ("rerank_k",), "rerank_k without a re-ranker (settings.rerank)")
    if rerank is not None and settings.get("pca") is not None:
        fail(keys + ("pca",), "a re-ranked number re-orders the exact global search, without PCA")
    if card.pca_dim and settings.get("pca") is None:
        fail(keys, f"model '{card.name}' is evaluated with PCA to {card.pca_dim} officially: state "
             "settings.pca {dim, fit}")  # fmt: skip
    for key, allowed in (("per_city", (True, False)), ("no_positive_policy", ("miss", "exclude"))):
        if settings.get(key) is not None and settings[key] not in allowed:
            fail(keys + (key,), f"{key} must be one of {list(allowed)}, got {settings[key]!r}")
    size = settings.get("image_size")
    if size is not None and not (isinstance(size, list) and len(size) == 2
                                 and all(isinstance(s, int) and s > 0 for s in size)):  # fmt: skip
        fail(keys + ("image_size",), f"image_size is [H, W], got {size!r}")
    checks = {"resize": RESIZE_STAGES, "dtype": DTYPE_NAMES, "antialias": (True, False)}
    for key, allowed in checks.items():
        if settings.get(key) is not None and settings[key] not in allowed:
            fail(keys + (key,), f"{key} must be one of {list(allowed)}, got {settings[key]!r}")
    for key in ("batch_size", "rerank_k"):
        value = settings.get(key)
        if value is not None and not (isinstance(value, int) and value >= 1):
            fail(keys + (key,), f"{key} must be a positive integer, got {value!r}")
    pca = settings.get("pca")
    if pca is not None and not (isinstance(pca, dict) and {"dim", "fit"} <= set(pca)
                                <= {"dim", "fit", "official"} and isinstance(pca["dim"], int)
                                and pca["fit"] in protocols):  # fmt: skip
        fail(keys + ("pca",), "pca is {dim: N, fit: PROTOCOL, official: what the official code "
             f"fits on (when vprbench cannot read that)}}, got {pca!r}")  # fmt: skip
    options = settings.get("options") or {}
    try:
        check_model_request(card.name, options)
    except VPRBenchError as exc:
        fail(keys + ("options",), str(exc))
