"""The quickstart: the whole pipeline on the embedded Nordland sample, with no set-up."""

from __future__ import annotations

from pathlib import Path

from vprbench.datasets.manage import SAMPLE_NAME, ensure_sample
from vprbench.datasets.protocols import load_registry
from vprbench.evaluate.run import evaluate
from vprbench.extract.run import extract
from vprbench.extract.settings import ExtractSettings

QUICKSTART_MODELS = ("pixels", "effnet-lite0-gem")


def run_quickstart(data_dir: Path, cache_dir: Path, results_dir: Path, progress=None):
    """Import nordland-sample, extract with each quickstart model, evaluate; returns (records, paths)."""
    dataset = ensure_sample(data_dir, load_registry())
    records, paths = [], []
    for name in QUICKSTART_MODELS:
        result = extract(dataset, ExtractSettings(model=name), cache_dir, progress=progress)
        record, path = evaluate(dataset, result, results_dir=results_dir)
        records.append(record)
        paths.append(path)
    assert dataset.name == SAMPLE_NAME
    return records, paths
