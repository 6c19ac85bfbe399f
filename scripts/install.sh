#!/usr/bin/env bash
# Installs vprbench and its dependencies into $VENV (default .venv), saying what each step does.
#
# pyproject.toml declares plain ranges (torch>=2.6, torchvision>=0.21) for users anywhere. On Linux
# x86_64 the torch wheel and PyPI's newest torchvision do not always import together, so the
# install first pins a pair known to work there (torch 2.14.1, torchvision 0.29.1).
# Set VPRBENCH_TORCH_PIN=0 to skip the pin and let pip resolve the ranges.
# VPRBENCH_INSTALL_VERBOSE=1 shows pip's own output.
set -euo pipefail
VENV=${VENV:-.venv}
PIP="$VENV/bin/python -m pip"
QUIET=-q
if [ "${VPRBENCH_INSTALL_VERBOSE:-0}" = "1" ]; then QUIET=; fi
start=$(date +%s)
say() { echo "[install $(( $(date +%s) - start ))s] $*"; }
if [ "${VPRBENCH_TORCH_PIN:-1}" = "1" ] && [ "$(uname -s)-$(uname -m)" = "Linux-x86_64" ]; then
  if "$VENV/bin/python" -c "import torch, torchvision, sys; sys.exit(torch.__version__.split('+')[0] != '2.14.1')" 2>/dev/null; then
    say "torch 2.14.1 and torchvision 0.29.1 already installed"
  else
    say "installing torch 2.14.1 and torchvision 0.29.1 (the largest step: a few minutes)"
    $PIP install $QUIET torch==2.14.1 torchvision==0.29.1
  fi
fi
say "installing vprbench and its dependencies (faiss-cpu, fvcore, h5py, pandas, matplotlib, timm, ..., and the dev tools: pytest, ruff, MkDocs)"
$PIP install $QUIET -e ".[dev]"
say "checking that vprbench imports"
"$VENV/bin/python" -c "import vprbench.cli" && say "done: $VENV/bin/vprbench"
