#!/usr/bin/env bash
# Installs vprbench and its dependencies into $VENV (default .venv).
#
# pyproject.toml declares plain ranges (torch>=2.6, torchvision>=0.21) for users anywhere. On the
# project's x86_64 machines, PyPI's torchvision does not import beside the CPU-only torch wheel on
# local disk, so we first pin the pair that is known to work there (it installs from local disk).
# Set VPRBENCH_TORCH_PIN=0 to skip the pin and let pip resolve the ranges.
set -euo pipefail
VENV=${VENV:-.venv}
PIP="$VENV/bin/python -m pip"
if [ "${VPRBENCH_TORCH_PIN:-1}" = "1" ] && [ "$(uname -s)-$(uname -m)" = "Linux-x86_64" ]; then
  if ! "$VENV/bin/python" -c "import torch, torchvision, sys; sys.exit(torch.__version__.split('+')[0] != '2.14.1')" 2>/dev/null; then
    $PIP install -q torch==2.14.1 torchvision==0.29.1
  fi
fi
$PIP install -q -e ".[dev]"
