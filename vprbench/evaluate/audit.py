"""How much does recall depend on the settings papers choose differently? One model, one protocol:
the protocol's own settings (the baseline), then one setting changed at a time, each evaluated on the
same queries and tested against the baseline (paired bootstrap interval of the difference, McNemar's
exact test: vprbench/metrics.py). Every run goes through the one extract -> evaluate path, so the
descriptors are cached and the variants' run records can be compared again later.

Rows (``SETTINGS``): inference batch size and batch composition (batch-dependent models only), image
size, interpolation, where the resize happens (PIL against Lu-Feng's unantialiased resize of the
normalised tensor), normalisation, fp32 vs bf16, PCA, exact vs approximate search, the no-positive
policy.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from vprbench import __version__
from vprbench.atomic import write_text
from vprbench.choices import NORMALISATIONS
from vprbench.datasets import manage
from vprbench.datasets.images import RESIZE_WHERE
from vprbench.errors import VPRBenchError
from vprbench.evaluate.clusters import describe_record, run_resampling, same_resampling
from vprbench.evaluate.compare import query_outcomes
from vprbench.evaluate.metrics import hits_at_k, paired_comparison
from vprbench.evaluate.pca import load_or_fit_pca
from vprbench.evaluate.run import evaluate
from vprbench.evaluate.search import HNSW
from vprbench.extract.cache import key_digest
from vprbench.extract.run import extract
from vprbench.extract.settings import SHUFFLE_SEED, ExtractResult, ExtractSettings

SETTINGS = (
    "batch-size",
    "batch-order",
    "image-size",
    "interpolation",
    "resize",
    "normalisation",
    "dtype",
    "pca",
    "search",
    "policy",
)
DEFAULT_PCA_DIM = 4096  # the official D2VPR / CricaVPR evaluation (test.py, --pca_dim 4096)


@dataclass
class Variant:
    """One setting changed from the baseline: how to extract and how to evaluate."""

    setting: str
    baseline: str  # the baseline's value, in words
    audited: str  # the changed value, in words
    extract: ExtractSettings | None = None  # None: the baseline's descriptors
    evaluate: dict = field(default_factory=dict)  # pca, search, no_positive_policy


def alternative_size(size: tuple[int, int]) -> tuple[int, int]:
    """1.5 times each side (halves rounded up), kept a multiple of the ViT patch (14) when it was
    one: 224 -> 336, 322 (23 patches) -> 490 (35)."""

    def side(s: int) -> int:
        return int(1.5 * s / 14 + 0.5) * 14 if s % 14 == 0 else int(1.5 * s + 0.5)

    return side(size[0]), side(size[1])


def _stage_label(resize: str, antialias: bool) -> str:
    return f"{RESIZE_WHERE[resize]}, {'antialiased' if antialias else 'not antialiased'}"


def _normalisation_name(mean, std) -> str:
    """A preset's name, else the values to 3 decimals (one value when the channels agree)."""
    for name, (m, s) in NORMALISATIONS.items():
        if np.allclose(mean, m) and np.allclose(std, s):
            return name

    def values(v) -> str:
        return (
            f"{v[0]:.3f}" if np.allclose(v, v[0]) else "(" + ", ".join(f"{x:.3f}" for x in v) + ")"
        )

    return f"mean {values(mean)}, std {values(std)}"


def plan(
    base: ExtractSettings,
    result: ExtractResult,
    image_size: tuple[int, int] | None,
    pca_dim: int,
    has_unmatched_queries: bool,
    largest_k: int = 1,
    pca_fit: str | None = None,
) -> tuple[list[Variant], list[dict]]:
    """The variants of this model and baseline, and the settings left out with the reason.
    ``largest_k``: the largest k audited, which sets the efSearch HNSW runs at (search.HNSW).
    ``pca_fit``: the dataset the PCA is fitted on, named in its row."""
    pre = result.preprocess
    variants, skipped = [], []
    if result.model.batch_dependent:
        b = result.batch_size
        sizes = [s for s in (b // 2, 2 * b) if s >= 1 and s != b]
        for s in sizes:
            variants.append(Variant("batch-size", f"{b} ({result.batch_size_source})", str(s),
                                    replace(base, batch_size=s)))  # fmt: skip
        variants.append(
            Variant(
                "batch-order",
                result.batch_order or "official order",
                f"shuffled batches of {b} (seed {SHUFFLE_SEED})",
                replace(base, batch_size=b, batch_order="shuffled"),
            )  # fmt: skip
        )
    else:
        reason = "the model is not batch-dependent: its descriptors do not depend on batches"
        skipped += [{"setting": s, "reason": reason} for s in ("batch-size", "batch-order")]
    if pre.image_size is None and not image_size:
        skipped.append({"setting": "image-size", "reason": "native resolution: images at their own "
                        "sizes (pass --image-size H W to compare with one size)"})  # fmt: skip
    else:
        size = tuple(pre.image_size) if pre.image_size else None
        other = tuple(image_size) if image_size else alternative_size(size)
        shown = "x".join(map(str, size)) if size else "native"
        variants.append(Variant("image-size", shown, "x".join(map(str, other)),
                                replace(base, image_size=other)))  # fmt: skip
    if pre.image_size is None:
        reason = "native resolution: nothing is resized"
        skipped += [{"setting": s, "reason": reason} for s in ("interpolation", "resize")]
    else:
        interp = "bicubic" if pre.interpolation != "bicubic" else "bilinear"
        variants.append(
            Variant("interpolation", pre.interpolation, interp, replace(base, interpolation=interp))
        )
        # the official pipelines split into these two (vprbench/datasets/resize.py)
        stage, antialias = ("normalised", False) if pre.resize == "pil" else ("pil", True)
        variants.append(Variant("resize", _stage_label(pre.resize, pre.antialias),
                                _stage_label(stage, antialias),
                                replace(base, resize=stage, antialias=antialias)))  # fmt: skip
    current = _normalisation_name(pre.mean, pre.std)
    norm = "half" if current == "imagenet" else "imagenet"
    variants.append(Variant("normalisation", current, norm, replace(base, normalisation=norm)))
    if base.dtype == "fp32":
        variants.append(Variant("dtype", "fp32", "bf16 autocast", replace(base, dtype="bf16")))
    dim = result.descriptors.database.shape[1]
    if pca_dim >= dim:
        skipped.append({"setting": "pca", "reason": f"descriptors are {dim}-d: PCA to {pca_dim} "
                        "reduces nothing"})  # fmt: skip
    else:
        fit = f", fit on {pca_fit}" if pca_fit else ""
        variants.append(Variant("pca", f"none ({dim}-d)", f"PCA to {pca_dim}{fit}",
                                evaluate={"pca_dim": pca_dim}))  # fmt: skip
    variants.append(Variant("search", "exact L2",
                            f"HNSW (M={HNSW['M']}, efSearch={max(HNSW['efSearch'], largest_k)})",
                            evaluate={"search": "hnsw"}))  # fmt: skip
    if has_unmatched_queries:
        variants.append(Variant("policy", "miss (queries without positives count)", "exclude",
                                evaluate={"no_positive_policy": "exclude"}))  # fmt: skip
    else:
        skipped.append({"setting": "policy", "reason": "every query has a positive: the policy "
                        "changes nothing"})  # fmt: skip
    return variants, skipped


# How the audit's p-values are corrected for testing many settings at once (its rows x k).
CORRECTIONS = {
    "holm": "Holm-Bonferroni over the {n} tests of this audit (every row at every k): p_holm",
    "none": "none: each of the {n} tests at its own 5% (expect false alarms among many rows)",
}


def _correct(rows: list[dict], correction: str) -> int:
    """Adds ``p_holm`` to every tested comparison of ``rows`` and bases ``significant`` on it
    (``correction`` "holm"); returns the number of tests in the family."""
    from vprbench.evaluate.metrics import holm

    tested = [c for row in rows for c in row["comparisons"] if c["p_value"] is not None]
    adjusted = (
        holm([c["p_value"] for c in tested]) if correction == "holm" else [None] * len(tested)
    )
    for c, p in zip(tested, adjusted, strict=True):
        c["p_holm"] = p
        c["significant"] = (p if p is not None else c["p_value"]) < 0.05
    return len(tested)


def _comparisons(variant_record: dict, base_record: dict, ks: list[int]) -> tuple[list[dict], str]:
    """Audited minus baseline at each k, and the test that was made."""
    (rv, ev), (rb, eb) = query_outcomes(variant_record), query_outcomes(base_record)
    if np.array_equal(ev, eb):
        resampling = same_resampling(run_resampling(variant_record, ev),
                                     run_resampling(base_record, eb), ("audited", "baseline"))  # fmt: skip
        rows = []
        for k in ks:
            c = paired_comparison(hits_at_k(rv, k)[ev], hits_at_k(rb, k)[eb], k, resampling)
            rows.append({"k": k, "recall": c.recall_a, "baseline": c.recall_b,
                         "difference": c.difference, "low": c.low, "high": c.high,
                         "only_audited": c.only_a, "only_baseline": c.only_b,
                         "p_value": c.p_value, "significant": c.significant})  # fmt: skip
        method = resampling.method()
        return rows, f"{method['paired_interval']}; {method['test']}"
    # The no-positive policy: the same hits over another denominator. Nothing is sampled, so the
    # change is exact and there is nothing to test.
    rows = []
    for k in ks:
        a = float(variant_record["results"]["recall"][str(k)])
        b = float(base_record["results"]["recall"][str(k)])
        rows.append({"k": k, "recall": a, "baseline": b, "difference": a - b, "low": None,
                     "high": None, "only_audited": None, "only_baseline": None, "p_value": None,
                     "significant": None})  # fmt: skip
    return rows, (
        f"none: the same hits counted over {int(ev.sum())} instead of {int(eb.sum())} queries "
        "(a definition, not a sample)"
    )


def run_audit(
    dataset_name: str,
    base: ExtractSettings,
    ks: list[int],
    data_dir: Path,
    cache_dir: Path,
    results_dir: Path,
    image_size: tuple[int, int] | None = None,
    pca_dim: int = DEFAULT_PCA_DIM,
    pca_fit: str | None = None,
    only: list[str] | None = None,
    progress=None,
    log: Callable[[str], None] = lambda _: None,
    correction: str = "holm",
) -> tuple[dict, Path]:
    """Audit ``base.model`` on ``dataset_name``; returns (audit record, its path). The variants'
    run records go to ``results_dir/audits/runs``, the audit record to ``results_dir/audits``.
    ``correction``: "holm" (Holm-Bonferroni over every test of the audit, rows x k) or "none"."""
    if correction not in CORRECTIONS:
        raise VPRBenchError(f"--correction must be one of {list(CORRECTIONS)}, got {correction!r}")
    for name in only or ():
        if name not in SETTINGS:
            raise VPRBenchError(
                f"--only: unknown setting {name!r}; the settings are {', '.join(SETTINGS)}"
            )
    if (
        base.batch_size is not None
        or base.batch_order != "official"
        or base.interpolation
        or (base.normalisation)
        or base.resize
        or base.antialias is not None
    ):
        raise VPRBenchError("an audit's baseline is the protocol's own settings: leave batch size, "
                            "batch order, interpolation, resize, antialias and normalisation at "
                            "their defaults")  # fmt: skip
    if pca_dim < 1:
        raise VPRBenchError(f"--pca-dim must be positive, got {pca_dim}")
    from vprbench.datasets.protocols import load_registry

    registry = load_registry()
    dataset = manage.open_dataset(dataset_name, data_dir, registry)
    runs_dir = Path(results_dir) / "audits"
    log(f"baseline: {base.model} on {dataset.name} with the protocol's settings")
    baseline = extract(dataset, base, cache_dir, progress=progress)
    model = baseline.module  # None when the baseline came from the cache: built by a variant
    base_record, base_path = evaluate(dataset, baseline, ks, "miss", runs_dir, base.device)
    if not base_record["results"]["ground_truth"]:
        raise VPRBenchError(f"dataset '{dataset.name}' has no ground truth: nothing to audit")
    unmatched = base_record["results"]["num_queries_without_positives"] > 0
    variants, skipped = plan(base, baseline, image_size, pca_dim, unmatched, max(ks),
                              pca_fit or dataset_name)  # fmt: skip
    if only:
        skipped = [s for s in skipped if s["setting"] in only]
        variants = [v for v in variants if v.setting in only]
    rows = []
    for v in variants:
        log(f"{v.setting}: {v.baseline} -> {v.audited}")
        extracted = (
            baseline
            if v.extract is None
            else extract(dataset, v.extract, cache_dir, progress=progress, model=model)
        )
        if model is None:
            model = extracted.module
        pca = None
        if "pca_dim" in v.evaluate:
            fit_on = baseline
            if pca_fit and pca_fit != dataset.name:
                fit_on = extract(manage.open_dataset(pca_fit, data_dir, registry), base,
                                 cache_dir, progress=progress, model=model)  # fmt: skip
            try:
                pca = load_or_fit_pca(cache_dir, fit_on.descriptors, v.evaluate["pca_dim"])
            except VPRBenchError as exc:
                skipped.append({"setting": v.setting, "reason": str(exc)})
                continue
        record, path = evaluate(dataset, extracted, ks,
                                v.evaluate.get("no_positive_policy", "miss"), runs_dir,
                                base.device, pca, search=v.evaluate.get("search", "exact"))  # fmt: skip
        comparisons, test = _comparisons(record, base_record, ks)
        rows.append({"setting": v.setting, "baseline": v.baseline, "audited": v.audited,
                     "run_id": record["run_id"], "record": str(path), "test": test,
                     "comparisons": comparisons})  # fmt: skip
    family = _correct(rows, correction)
    audit_key = {
        "baseline": base_record["run_id"],
        "ks": list(ks),
        "image_size": list(image_size) if image_size else None,
        "pca_dim": pca_dim,
        "pca_fit": pca_fit,
        "only": sorted(only) if only else None,
    }
    audit_id = f"{baseline.model.name}__{dataset.name}__{key_digest(audit_key)}"
    record = {
        "audit_id": audit_id,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "vprbench_version": __version__,
        "model": base_record["model"],
        "protocol": base_record["protocol"],
        "baseline": {
            "run_id": base_record["run_id"],
            "record": str(base_path),
            "settings": base_record["settings"],
            "recall": base_record["results"]["recall"],
            "ci95": base_record["results"]["ci95"],
        },
        "ks": list(ks),
        "pca_fit": pca_fit or dataset.name,
        "pca_fit_note": "the official evaluation fits its PCA on Pitts30k images; pass --pca-fit "
        "to fit on another dataset than the audited one",
        "rows": rows,
        "skipped": skipped,
        "statistics": {
            "difference": "audited minus baseline recall, on the same queries",
            # how the queries are resampled: the baseline's cluster rule (every row shares it)
            "resampling": describe_record(base_record),
            **{
                key: value
                for key, value in (base_record["results"].get("resampling") or {}).items()
                if key
                in ("paired_interval", "test", "resamples", "seed", "source", "note", "warning")
            },
            "multiple_comparisons": CORRECTIONS[correction].format(n=family),
            "significant": "Holm-adjusted p < 0.05" if correction == "holm" else "p < 0.05",
        },
    }
    path = runs_dir / f"{audit_id}.json"
    write_text(path, json.dumps(record, indent=2) + "\n")
    return record, path
