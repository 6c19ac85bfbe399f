"""Commands that only read registries, and argument errors, answer before any heavy import: each
case runs the command line in a fresh interpreter and reads ``sys.modules`` afterwards."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("torch", "torchvision", "faiss", "fvcore", "timm")

_PROBE = """
import json, sys
sys.argv = ["vprbench", *json.loads(sys.argv[1])]
from vprbench.cli import main
try:
    main()
    code = 0
except SystemExit as exc:
    code = exc.code
print(json.dumps({"code": code, "heavy": sorted(m for m in %r if m in sys.modules)}),
      file=sys.__stderr__)
"""


def probe(args: list[str], cwd) -> tuple[int, list[str], str]:
    """(exit code, heavy modules imported, everything printed) of ``vprbench ARGS``."""
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE % (HEAVY,), json.dumps(args)],
        capture_output=True, text=True, cwd=cwd, timeout=120,
    )  # fmt: skip
    last = proc.stderr.strip().splitlines()[-1]
    result = json.loads(last)
    return result["code"], result["heavy"], proc.stdout + proc.stderr


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["models", "list"], 0, "d2vpr"),
        (["models", "info", "d2vpr"], 0, "finetune_no_encoder"),
        (["datasets", "info", "sped"], 0, "607"),
        (["extract", "--model", "d2vpx", "--dataset", "sped"], 1, "did you mean 'd2vpr'?"),
        (["evaluate", "--model", "effnet-lite0-gem", "--dataset", "nordland-sample",
          "--weights", "missing.pth"], 1, "missing.pth: weights file not found"),
        (["evaluate", "--model", "cosplace", "--dataset", "sped", "--set", "dim=3"], 1,
         "option 'dim' must be one of [32, 64"),
        (["extract", "--model", "d2vpr", "--dataset", "sped", "--set", "drm=3"], 1,
         "option 'drm' must be bool"),
        (["extract", "--model", "d2vpr", "--dataset", "sped", "--weights", "official"], 1,
         "no official weights URL (releases: official:finetune_no_encoder)"),
        (["extract", "--model", "pixels", "--dataset", "nosuch"], 1, "unknown dataset 'nosuch'"),
        (["profile", "mixvp"], 1, "did you mean 'mixvpr'?"),
        (["train", "finetune", "--model", "effnet-lite0-gem", "--data", "nordland-train-sample",
          "--out", "runs/x", "--init", "nothere.pth"], 1, "nothere.pth: weights file not found"),
        (["train", "distill", "--teacher", "cricavpr", "--teacher-weights", "t.pth",
          "--data", "nordland-train-sample", "--out", "runs/y"], 1, "t.pth: weights file not"),
    ],
)  # fmt: skip
def test_answers_without_heavy_imports(args, code, message, tmp_path, monkeypatch):
    monkeypatch.setenv("VPRBENCH_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("VPRBENCH_CACHE", str(tmp_path / "cache"))
    got, heavy, out = probe(args, tmp_path)
    assert got == code, out
    assert message in " ".join(out.split()), out
    assert heavy == [], f"{args} imported {heavy}"


def test_a_real_extraction_does_import_torch(tmp_path, monkeypatch):
    """The probe sees heavy imports when they happen (so the test above can fail)."""
    monkeypatch.setenv("VPRBENCH_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("VPRBENCH_CACHE", str(tmp_path / "cache"))
    got, heavy, out = probe(
        ["extract", "--model", "pixels", "--dataset", "nordland-sample"], tmp_path
    )
    assert got == 0, out
    assert "torch" in heavy
