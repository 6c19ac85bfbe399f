"""Running `vprbench evaluate` in subprocesses, alone or under torchrun (gloo), for the tests that
compare two ranks with one process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np


def torchrun(nproc: int = 2) -> list[str]:
    """The launcher arguments of ``python -m torch.distributed.run`` on a free local port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return ["-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_addr",
            "127.0.0.1", "--master_port", str(port)]  # fmt: skip


def evaluate_in_subprocess(program: list[str], argv: list[str], results: Path,
                           launcher: list[str] = ()) -> tuple[dict, np.lib.npyio.NpzFile]:  # fmt: skip
    """(run record, predictions) of ``python [launcher] program evaluate ARGV --results-dir
    RESULTS``; ``program`` is ``["-m", "vprbench"]`` or a script's path."""
    command = [
        sys.executable,
        *launcher,
        *program,
        "evaluate",
        *argv,
        "--results-dir",
        str(results),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    (record,) = (results / "runs").glob("*.json")
    return json.loads(record.read_text()), np.load(record.with_suffix(".predictions.npz"))
