"""Validation during training: the evaluation code path of `vprbench evaluate`, without its disk cache."""

from __future__ import annotations

import tempfile
from pathlib import Path


def validate(model, names: list[str], config, registry) -> dict:
    """Recall@k of ``model`` on each dataset, through the same extract + evaluate path as `vprbench
    evaluate`, into a temporary cache and results folder (a training run would otherwise write every
    validation's descriptors to the disk cache)."""
    from vprbench.datasets.manage import open_dataset
    from vprbench.evaluate import DEFAULT_KS, evaluate
    from vprbench.extract import ExtractSettings, extract
    from vprbench.models.registry import WeightsInfo
    from vprbench.paths import data_root

    was_training = model.training
    model.eval()
    saved_info = getattr(model, "weights_info", None)
    model.weights_info = WeightsInfo(source="training", sha256=None, random_init=False)
    out = {}
    try:
        with tempfile.TemporaryDirectory(prefix="vprbench-val-") as tmp:
            for name in names:
                ds = open_dataset(name, data_root(), registry)
                settings = ExtractSettings(model=model.card.name, image_size=tuple(config.image_size),
                                           batch_size=config.val_batch_size, device=config.device)  # fmt: skip
                result = extract(ds, settings, Path(tmp) / "cache", model=model)
                ks = [k for k in DEFAULT_KS if k <= len(ds.database)] or [1]
                record, _ = evaluate(ds, result, ks, results_dir=Path(tmp) / "results")
                out[name] = {f"R@{k}": v for k, v in record["results"]["recall"].items()}
    finally:
        model.weights_info = saved_info
        model.train(was_training)
    return out
