"""A model's official evaluation pipeline, and how a run differs from it.

A model card records what its paper's evaluation did (resize stage, antialias, size or native
resolution, interpolation, precision, inference batch sizes, which released file goes with which
benchmark). Every run record carries the pipeline that ran next to the official one and the list of
differences, so a number computed another way is never mistaken for a reproduction.
"""

from __future__ import annotations

from typing import Any


def official_preprocess(card):
    """The :class:`~vprbench.datasets.images.Preprocess` the card's official evaluation uses."""
    from vprbench.extract.request import resolve_preprocess
    from vprbench.extract.settings import ExtractSettings

    return resolve_preprocess(card, ExtractSettings(model=card.name))


def differences(
    card, preprocess, dtype: str, protocol: str | None, release: str | None,
    batch: tuple[int, int] | None = None,
) -> list[str]:  # fmt: skip
    """What differs between a run and the card's official pipeline, one phrase each: the setting,
    what ran, and '(official: ...)'. Empty when the run follows the card. ``batch``: (inference
    batch size used, official size) for a batch-dependent model. PCA is applied after extraction:
    :func:`pca_difference`."""
    official = official_preprocess(card)
    out = []
    if preprocess.image_size != official.image_size:
        out.append(f"input {_size(preprocess.image_size)} (official: {_size(official.image_size)})")
    resized = preprocess.image_size is not None
    for field, label in (("resize", "resize stage"), ("interpolation", "interpolation"),
                         ("antialias", "antialias")):  # fmt: skip
        ran, should = getattr(preprocess, field), getattr(official, field)
        if field in ("resize", "antialias") and preprocess.resize in card.resize_alternatives:
            continue
        if resized and ran != should:
            out.append(f"{label} {ran} (official: {should})")
    if (preprocess.mean, preprocess.std) != (official.mean, official.std):
        out.append("normalisation differs from the card's mean/std")
    if dtype != card.dtype:
        out.append(f"dtype {dtype} (official: {card.dtype})")
    if batch is not None and batch[0] != batch[1]:
        out.append(f"inference batch size {batch[0]} (official: {batch[1]})")
    expected = card.release_for(protocol) if protocol else None
    if expected is not None and release is not None and release != expected.name:
        ran = card.release(release)
        out.append(
            f"weights {ran.file} (official for {protocol}: {expected.file}, "
            f"--weights official:{expected.name})"
        )
    return out


def pca_difference(official_pca: int | None, pca_dim: int | None) -> list[str]:
    """The PCA of a run against the card's official one (``official_pca``: its dimension or None)."""
    if official_pca == pca_dim:
        return []
    ran = f"PCA-{pca_dim}" if pca_dim else "no PCA"
    should = f"PCA-{official_pca}" if official_pca else "no PCA"
    return [f"{ran} (official: {should})"]


def _size(size) -> str:
    return "native resolution" if size is None else f"{size[0]}x{size[1]}"


def pipeline(card, registry=None) -> dict[str, Any]:
    """The whole official pipeline of ``card`` for a person or a script: preprocessing (size, stage,
    interpolation, antialias, mean/std), precision, inference batch sizes per protocol
    (batch-dependent models), the released files per benchmark, and the sources."""
    from vprbench.datasets.images import RESIZE_WHERE

    pre = official_preprocess(card)
    out: dict[str, Any] = {
        "input": _size(pre.image_size),
        "resize": None if pre.image_size is None else pre.resize,
        "resize_where": None if pre.image_size is None else RESIZE_WHERE[pre.resize],
        "interpolation": None if pre.image_size is None else pre.interpolation,
        "antialias": None if pre.image_size is None else pre.antialias,
        "mean": list(pre.mean),
        "std": list(pre.std),
        "dtype": card.dtype,
        "pca_dim": card.pca_dim,
        "batch_dependent": card.batch_dependent,
        "inference_batch_size": None,
        "releases": [
            {
                "name": r.name,
                "file": r.file,
                "benchmarks": list(r.benchmarks),
                "weights": f"official:{r.name}" if r.url else "a file (no direct URL)",
                "note": r.note,
            }
            for r in card.releases
        ],  # fmt: skip
        "protocol": card.protocol,
        "source": card.pipeline_source,
    }
    if card.batch_dependent and card.batch_convention:
        from vprbench.datasets.protocols import BATCH_CONVENTIONS, load_registry

        registry = registry or load_registry()
        sizes = {
            name: p.official_batch_size(card.batch_convention)[0] for name, p in registry.items()
        }
        out["inference_batch_size"] = {
            "default": BATCH_CONVENTIONS[card.batch_convention],
            "per_protocol": {k: v for k, v in sizes.items()
                             if v != BATCH_CONVENTIONS[card.batch_convention]},
        }  # fmt: skip
    return out
