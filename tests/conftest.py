"""Shared fixtures: isolated vprbench folders, ../shared/data, and tiny generated datasets."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vprbench.models.base import VPRModel

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("VPRBENCH_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture
def shared_data() -> Path:
    """../shared/data (real ground-truth files). Required in CI; skipped elsewhere if absent."""
    if not SHARED_DATA.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"{SHARED_DATA} is missing in CI")
        pytest.skip(f"{SHARED_DATA} not present")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def isolated_dirs(tmp_path, monkeypatch):
    """Every test gets its own data, cache and results folders."""
    dirs = {name: tmp_path / name for name in ("data", "cache", "results")}
    monkeypatch.setenv("VPRBENCH_DATA", str(dirs["data"]))
    monkeypatch.setenv("VPRBENCH_CACHE", str(dirs["cache"]))
    monkeypatch.setenv("VPRBENCH_RESULTS", str(dirs["results"]))
    monkeypatch.delenv("VPRBENCH_DATASETS_YAML", raising=False)
    return dirs


def make_vpr_bench_folder(
    root: Path, n_db: int, positives: list[list[int]], size=(24, 32), noise=8, seed=0
) -> Path:
    """A VPR-Bench folder (ref/, query/, ground_truth_new.npy) of random images. Query i is a noisy
    copy of database image positives[i][0] (or a fresh random image if it has no positives), so a
    pixel matcher finds the first positive of every query at rank 1."""
    rng = np.random.default_rng(seed)
    (root / "ref").mkdir(parents=True)
    (root / "query").mkdir()
    h, w = size
    db = rng.integers(0, 256, size=(n_db, h, w, 3), dtype=np.uint8)
    for i, img in enumerate(db):
        Image.fromarray(img).save(root / "ref" / f"{i:07d}.png")
    rows = np.empty((len(positives), 2), dtype=object)
    for q, pos in enumerate(positives):
        base = db[pos[0]] if pos else rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
        jitter = rng.integers(-noise, noise + 1, size=base.shape)
        img = np.clip(base.astype(int) + jitter, 0, 255).astype(np.uint8)
        Image.fromarray(img).save(root / "query" / f"{q:07d}.png")
        rows[q, 0], rows[q, 1] = q, list(pos)
    np.save(root / "ground_truth_new.npy", rows, allow_pickle=True)
    return root


@pytest.fixture
def tiny_dataset(tmp_path):
    """A formatted 12-database / 6-query dataset named 'tiny'; query 5 has no positives."""
    from vprbench.datasets.manage import import_dataset
    from vprbench.datasets.protocols import load_registry
    from vprbench.paths import data_root

    positives = [[0, 1], [2], [4, 5], [7], [11], []]
    folder = make_vpr_bench_folder(tmp_path / "tiny_src", 12, positives)
    import_dataset(folder, "vpr-bench", "tiny", data_root(), load_registry())
    from vprbench.datasets.formatted import load_formatted

    return load_formatted("tiny", data_root())


class BatchMean(VPRModel):
    """A batch-dependent toy: each descriptor is its pixels plus the batch mean (like a cross-image
    encoder, the output depends on which images share a batch)."""

    def __init__(self):
        super().__init__()
        self.descriptor_dim = 3 * 8 * 8
        self.batch_dependent = True

    def forward(self, x):
        flat = x.flatten(1)
        return torch.nn.functional.normalize(flat + flat.mean(0, keepdim=True), dim=1)


@pytest.fixture
def batchmean_model():
    """Registers 'test-batchmean' for one test, then removes it from the registry."""
    from vprbench.models import registry
    from vprbench.models.registry import ModelCard, WeightsInfo, register_model

    def build(options, weights, cache_dir):
        model = BatchMean()
        model.weights_info = WeightsInfo(source=None, sha256=None, random_init=False)
        return model

    card = ModelCard(
        name="test-batchmean",
        description="test only",
        image_size=(8, 8),
        descriptor_dim=192,
        batch_dependent=True,
        batch_convention="d2vpr",
    )
    register_model(card)(build)
    yield card.name
    registry._REGISTERED.pop(card.name)


def latex_compiles(table: Path, workdir: Path) -> bool:
    """\\input ``table`` into a booktabs article and run pdflatex; False if pdflatex is not
    installed, else asserts that it compiled (the log tail is the failure message)."""
    if shutil.which("pdflatex") is None:
        return False
    doc = workdir / "doc.tex"
    doc.write_text("\\documentclass{article}\\usepackage{booktabs}\n"
                   f"\\begin{{document}}\\input{{{table}}}\\end{{document}}\n")  # fmt: skip
    done = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", doc.name],
                          cwd=workdir, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:]
    assert (workdir / "doc.pdf").stat().st_size > 0
    return True


def check_official_model(name: str, options: dict, params: int, dim: int, keys: set[str]) -> None:
    """A registered baseline as its official class is released: exact parameter count, the official
    key set, strict reload, and a forward at the card's input size giving ``dim`` L2-normalised."""
    from vprbench.models import create_model

    torch.manual_seed(0)
    model = create_model(name, **options)
    assert sum(p.numel() for p in model.parameters()) == params
    assert set(model.state_dict()) == keys
    model.load_checkpoint(model.state_dict(), "itself")  # strict keys and shapes
    h, w = model.card.image_size
    with torch.inference_mode():
        out = model(torch.rand(2, 3, h, w))
    assert out.shape == (2, dim) and model.descriptor_dim == dim
    torch.testing.assert_close(out.norm(dim=1), torch.ones(2))
