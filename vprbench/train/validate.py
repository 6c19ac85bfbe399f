"""Validation during training: the evaluation code path of `vprbench evaluate`, without its disk cache.

Under torchrun every rank takes part: the extraction is the same collective, sharded one as `vprbench
extract` under torchrun (each rank computes its share of the batches into one shared folder), rank 0
searches and scores, and every rank gets its result. A rank that validated alone would pair the
extraction's collectives with the other ranks' barriers and hang or crash.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path


def validate(model, names: list[str], config, registry, rank: int = 0, world: int = 1,
             device: str | None = None) -> dict:  # fmt: skip
    """Recall@k of ``model`` on each dataset, through the same extract + evaluate path as `vprbench
    evaluate`, into a temporary cache and results folder (a training run would otherwise write every
    validation's descriptors to the disk cache). With ``world`` > 1 every rank calls it. ``device``:
    where the model trains (this rank's GPU), default ``config.device``."""
    from vprbench.datasets.manage import open_dataset
    from vprbench.evaluate.run import DEFAULT_KS, evaluate
    from vprbench.extract.run import extract
    from vprbench.extract.settings import ExtractSettings
    from vprbench.models.registry import WeightsInfo
    from vprbench.paths import data_root

    was_training = model.training
    model.eval()
    saved_info = getattr(model, "weights_info", None)
    model.weights_info = WeightsInfo(source="training", sha256=None, random_init=False)
    out: dict = {}
    # the folder every rank's shards go to: under the run folder, which every rank can reach
    tmp = _shared_folder(Path(config.out), rank, world)
    try:
        for name in names:
            ds = open_dataset(name, data_root(), registry)
            settings = ExtractSettings(model=model.card.name, image_size=tuple(config.image_size),
                                       batch_size=config.val_batch_size,
                                       device=device or config.device)  # fmt: skip
            result = extract(ds, settings, tmp / "cache", model=model)
            if rank == 0:
                ks = [k for k in DEFAULT_KS if k <= len(ds.database)] or [1]
                record, _ = evaluate(ds, result, ks, results_dir=tmp / "results")
                out[name] = {f"R@{k}": v for k, v in record["results"]["recall"].items()}
        if world > 1:
            import torch.distributed as dist

            holder = [out]
            dist.broadcast_object_list(holder, src=0)
            out = holder[0]
            dist.barrier()  # every rank is done with the folder
    finally:
        if rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)
        model.weights_info = saved_info
        model.train(was_training)
    return out


def _shared_folder(out: Path, rank: int, world: int) -> Path:
    """A fresh temporary folder, made by rank 0 and named to every rank."""
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        path = Path(tempfile.mkdtemp(prefix=".validation-", dir=out))
    else:
        path = None
    if world > 1:
        import torch.distributed as dist

        holder = [str(path) if path else None]
        dist.broadcast_object_list(holder, src=0)
        path = Path(holder[0])
    return path
