"""The identity of an extraction: the cache key (every input that changes a descriptor) and the
request record that maps a user's request to its key without building the model.

A request (model, weights file, options, settings, dataset and the identity of its images) is mapped
to its cache key the first time; later the same request finds its descriptors without building the
model or reading its weights, and without importing torch (``requests/<digest>.json`` in the cache,
checked against the weights files' size and mtime).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

import numpy as np

from vprbench import __version__
from vprbench.atomic import write_text
from vprbench.choices import NORMALISATIONS
from vprbench.datasets.formatted import FormattedDataset
from vprbench.datasets.images import Preprocess
from vprbench.extract.cache import FORMAT_VERSION, SPLITS, DescriptorCache, key_digest
from vprbench.extract.settings import SHUFFLE_SEED, ExtractResult, ExtractSettings, ModelSummary
from vprbench.paths import file_identity


def device_type(device: str) -> str:
    return device.split(":")[0]


def request_key(dataset: FormattedDataset, settings: ExtractSettings, images: str) -> dict:
    """Everything a user's request depends on, in files and settings, without building the model:
    the same request gives the same cache key (the model code is pinned by the version)."""
    from vprbench.datasets.protocols import default_registry_path

    weights = settings.weights
    if weights is not None and Path(str(weights)).expanduser().is_file():
        weights = file_identity(Path(str(weights)).expanduser())
    request = {
        f.name: getattr(settings, f.name)
        for f in dataclasses.fields(settings)
        if f.name not in ("device", "workers", "loader", "compile")  # none changes a descriptor
    }
    if settings.decode != "pil":  # then the device's decoder and resize make the pixels
        request["device"] = device_type(settings.device)
    if settings.store == "fp32":  # the default adds no entry: earlier request records stay valid
        request.pop("store")
    if settings.local is None:  # descriptors, not local features: as before
        request.pop("local")
    request |= {
        "vprbench": __version__,
        "weights": weights,
        "image_size": _size_entry(settings.image_size),
        "overrides": settings.overrides or {},
        "dataset": dataset.name,
        "images": images,
        "dataset_files": [
            file_identity(dataset.folder / n) for n in ("manifest.json", "batch_order.npz")
        ],
        "registry": file_identity(default_registry_path()),
    }
    return json.loads(json.dumps(request, default=str))


def _size_entry(size) -> list | str | None:
    return list(size) if size not in (None, "native") else size


def _request_path(cache_dir: Path, request: dict) -> Path:
    return Path(cache_dir) / "requests" / f"{key_digest(request)}.json"


def from_request(request: dict, cache_dir: Path) -> ExtractResult | None:
    """The result of an earlier identical request, if its weights files and descriptors are
    unchanged; else None (the model is built and the key computed as usual)."""
    path = _request_path(cache_dir, request)
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if saved.get("request") != request:
        return None
    if any(file_identity(f[0]) != f for f in saved["weights_files"]):
        return None  # a weights file was replaced or touched: hash it again
    cached = DescriptorCache(cache_dir).load(saved["key"])
    if cached is None:
        return None
    return ExtractResult(cached, ModelSummary(**saved["model"]),
        Preprocess.from_dict(saved["preprocess"]), saved["batch_size"], False, 0.0, {}, saved["batch_size_source"], saved["batch_order"], official=saved.get("official", {}))  # fmt: skip


def save_request(cache_dir: Path, request: dict, result: ExtractResult, files: list) -> None:
    record = {
        "request": request,
        "key": result.descriptors.key,
        "weights_files": files,
        "model": dataclasses.asdict(result.model),
        "preprocess": result.preprocess.as_dict(),
        "batch_size": result.batch_size,
        "batch_size_source": result.batch_size_source,
        "batch_order": result.batch_order,
        "official": result.official,
    }
    path = _request_path(cache_dir, request)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, json.dumps(record, indent=1) + "\n")


def image_fingerprints(dataset: FormattedDataset) -> dict[str, str]:
    """sha256 over the resolved image root and every image's path, size and modification time: a
    re-formatted or re-downloaded copy under the same dataset name is a different key. ``"all"``
    covers both splits; ``"database"`` and ``"queries"`` each one split (a shared database's entry
    is keyed by its own images), all from one pass over the files."""
    root = str(Path(dataset.image_root).resolve()).encode()
    whole = hashlib.sha256(root)
    prints = {"all": whole}
    for split in SPLITS:
        own = prints[split] = hashlib.sha256(root)
        whole.update(f"\n{split}".encode())
        own.update(f"\n{split}".encode())
        for rel in dataset.split(split):
            try:
                st = os.stat(dataset.image_path(rel))
                line = f"\n{rel}\t{st.st_size}\t{st.st_mtime_ns}".encode()
            except OSError:
                line = f"\n{rel}\tmissing".encode()
            whole.update(line)
            own.update(line)
    return {name: h.hexdigest() for name, h in prints.items()}


def image_fingerprint(dataset: FormattedDataset) -> str:
    """The fingerprint of both splits' images (``image_fingerprints(dataset)["all"]``)."""
    return image_fingerprints(dataset)["all"]


def shared_database(dataset: FormattedDataset, registry=None) -> str | None:
    """The name of the shared database ``dataset``'s protocol names (``database.shared`` in
    datasets.yaml), or None: then the dataset's two splits are one cache entry."""
    from vprbench.datasets.protocols import load_registry

    protocol = (registry or load_registry()).get(dataset.manifest.get("protocol") or "")
    return None if protocol is None else protocol.database_shared


def split_order(dataset: FormattedDataset, split: str, batch_order: str = "official") -> np.ndarray:
    """Dataset indices of ``split`` in the order a batch-dependent model batches them: the
    protocol's official order, or a shuffle seeded by SHUFFLE_SEED and the split."""
    if batch_order == "shuffled":
        rng = np.random.default_rng([SHUFFLE_SEED, SPLITS.index(split)])
        return rng.permutation(len(dataset.split(split))).astype(np.int64)
    return dataset.batch_order(split)


def batch_order_digest(
    dataset: FormattedDataset, batch_order: str = "official", splits=SPLITS
) -> str:
    """Digest of the batch order of ``splits`` (which images share a batch)."""
    h = hashlib.sha256()
    for split in splits:
        h.update(split_order(dataset, split, batch_order).tobytes())
    return h.hexdigest()[:20]


def resolve_preprocess(card, settings: ExtractSettings) -> Preprocess:
    """The model card's official preprocessing (size or native resolution, interpolation, resize
    stage and antialias, normalisation) with what the user chose instead."""
    from vprbench.datasets.resize import check_stage

    mean, std = (
        NORMALISATIONS[settings.normalisation] if settings.normalisation else (card.mean, card.std)
    )
    if settings.image_size == "native":
        size = None
    elif settings.image_size is not None:
        size = tuple(settings.image_size)
    else:
        size = None if card.native_resolution else tuple(card.image_size)
    resize = settings.resize or card.resize
    if settings.antialias is not None:
        antialias = settings.antialias
    else:  # PIL always antialiases; a stage chosen instead of the card's keeps the card's setting
        antialias = True if resize == "pil" else card.antialias
    check_stage(resize, settings.interpolation or card.interpolation, antialias)
    return Preprocess(
        image_size=size,
        interpolation=settings.interpolation or card.interpolation,
        mean=tuple(mean),
        std=tuple(std),
        resize=resize,
        antialias=bool(antialias),
    )


def cache_key(
    model,
    dataset: FormattedDataset,
    preprocess: Preprocess,
    settings,
    batch_size: int,
    images: dict[str, str] | None = None,
    shared: str | None = None,
) -> dict:
    """The cache key: every input that changes a descriptor (the images themselves included), and
    nothing else (not the positives). ``images``: the dataset's image_fingerprints, if computed.

    ``shared``: the name of the protocol's shared database (``shared_database``). Then the key is
    that of the queries alone (``"splits": ["queries"]``) and names, as ``"database_entry"``, the key
    of the database alone: stored once under the shared name, keyed by the database's own images
    and batches, so every protocol over that database (SF-XL's four query sets) finds it."""
    images = images or image_fingerprints(dataset)
    if shared is None:
        return _key(model, dataset.name, preprocess, settings, batch_size, images["all"],
                    batch_order_digest(dataset, settings.batch_order))  # fmt: skip
    part = {split: _key(model, name, preprocess, settings, batch_size, images[split],
                        batch_order_digest(dataset, settings.batch_order, (split,)))
                   | {"splits": [split]}
            for split, name in (("database", shared), ("queries", dataset.name))}  # fmt: skip
    return part["queries"] | {"database_entry": part["database"]}


def _key(model, dataset: str, preprocess, settings, batch_size, images: str, order: str) -> dict:
    info = model.weights_info
    return (
        {
            "format": FORMAT_VERSION,
            "model": model.card.name,
            "options": model.options,
            "weights_sha256": info.sha256,
            "random_init": info.random_init,
            "preprocess": preprocess.key(),
            "dtype": settings.dtype,
            "batch_size": batch_size if model.batch_dependent else None,
            "batch_order": order if model.batch_dependent else None,
            "dataset": dataset,
            "images": images,
            "on_bad_image": settings.on_bad_image,
        }
        | (
            # PIL decoding (the default) adds no entry, so earlier caches stay valid.
            {"decode": f"torchvision on {device_type(settings.device)}"}
            if settings.decode != "pil"
            else {}
        )
        | ({"store": settings.store} if settings.store != "fp32" else {})
    )
