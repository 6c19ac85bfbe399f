"""Progress in logs and pipes: steady plain lines instead of rich's redrawn bar."""

from __future__ import annotations

import io

from rich.console import Console

from vprbench.ui import LineProgress, live_progress


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def lines_of(console: Console) -> list[str]:
    return console.file.getvalue().splitlines()


def test_lines_at_a_steady_interval_with_rate_and_eta():
    out = Console(file=io.StringIO(), width=200)
    clock = Clock()
    progress = LineProgress(out, interval=30, clock=clock)
    task = progress.add_task("extract database", total=1000, unit="images")
    clock.now = 10
    progress.advance(task, 100)  # the first update always prints
    clock.now = 20
    progress.advance(task, 100)  # 10 s after the last line: quiet
    clock.now = 40
    progress.advance(task, 200)  # 30 s after it: a line
    clock.now = 100
    progress.advance(task, 600)  # complete: a line whatever the interval
    progress.advance(task, 0)
    assert lines_of(out) == [
        "extract database: 100/1,000 (10%) 10.0 images/s ETA 1m30s",
        "extract database: 400/1,000 (40%) 10.0 images/s ETA 1m00s",
        "extract database: 1,000/1,000 (100%) 10.0 images/s in 1m40s",
    ]


def test_a_new_epoch_restarts_the_rate_and_prints_its_end():
    out = Console(file=io.StringIO(), width=200)
    clock = Clock()
    progress = LineProgress(out, interval=1000, clock=clock)
    task = progress.add_task("finetune epoch 1", total=None, status="", unit="batches")
    clock.now = 5
    progress.update(task, completed=5, total=10, status="loss 0.5000")
    clock.now = 10
    progress.update(task, completed=10, total=10, status="loss 0.4000")
    clock.now = 14
    progress.update(task, description="finetune epoch 2", completed=2, total=10, status="loss 0.3")
    clock.now = 30
    progress.update(task, completed=10, total=10, status="loss 0.2")
    assert lines_of(out) == [
        "finetune epoch 1: 5/10 (50%) 1.0 batches/s ETA 0m05s loss 0.5000",
        "finetune epoch 1: 10/10 (100%) 1.0 batches/s in 0m10s loss 0.4000",
        "finetune epoch 2: 10/10 (100%) 0.5 batches/s in 0m16s loss 0.2",
    ]


def test_lines_when_stderr_is_not_a_terminal(monkeypatch):
    monkeypatch.delenv("VPRBENCH_PROGRESS", raising=False)
    pipe = Console(file=io.StringIO())
    assert isinstance(live_progress(to=pipe), LineProgress)
    terminal = Console(file=io.StringIO(), force_terminal=True)
    assert not isinstance(live_progress(to=terminal), LineProgress)
    monkeypatch.setenv("VPRBENCH_PROGRESS", "lines")
    assert isinstance(live_progress(to=terminal), LineProgress)


def test_extract_into_a_pipe_prints_progress_lines(tmp_path):
    """`vprbench extract ... 2> log`: the log holds plain progress lines, not a redrawn bar."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "VPRBENCH_DATA": str(tmp_path / "data"),
           "VPRBENCH_CACHE": str(tmp_path / "cache"), "VPRBENCH_PROGRESS_INTERVAL": "0"}  # fmt: skip
    env.pop("VPRBENCH_PROGRESS", None)
    done = subprocess.run(
        [sys.executable, "-m", "vprbench", "extract", "--model", "pixels", "--dataset",
         "nordland-sample", "--batch-size", "200"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("nordland-sample ")]
    assert "\r" not in done.stderr and "\x1b[" not in done.stderr
    for split in ("database", "queries"):
        ours = [line for line in lines if line.startswith(f"nordland-sample {split}: ")]
        # interval 0: a line when the split starts, one per batch of 200 images, and the last one
        # with the time taken
        assert [line.split(": ")[1].split(" (")[0] for line in ours] == [
            "0/600",
            "200/600",
            "400/600",
            "600/600",
        ], done.stderr
        assert "images/s ETA" in ours[1] and "images/s in " in ours[-1]
