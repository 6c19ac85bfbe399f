"""Downloading a folder served by rsync (VPR-datasets-downloader's Eynsham, St Lucia and Baidu Mall:
``rsync://vandaldata.polito.it/sf_xl/VPR-datasets-downloader/<set>``, VDD README).

The ``rsync`` program does the transfer: files already complete (same size and modification time)
are skipped and interrupted ones are kept in a partial folder, so running the download again
resumes it. Then every file is compared with the server's by checksum (a dry run of ``rsync
--checksum``); a file that differs is fetched again once, and if it still differs the download fails
naming it. The source may also be a local folder (a mirror, or the tests).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from vprbench.datasets.download import Progress
from vprbench.errors import VPRBenchError

PARTIAL_DIR = ".rsync-partial"  # inside the destination: an interrupted file's bytes, reused
# rsync 3.1+ ``--info=progress2``: "... (xfr#12, to-chk=34/567)": 34 of 567 files left to check
_TO_CHECK = re.compile(r"to-chk=(\d+)/(\d+)")
_FILE = "file: "  # before each name rsync lists, so that progress lines are never taken for names
MISSING = (
    "the `rsync` program is not installed, and {source} is served by rsync: install the rsync "
    "package (Debian/Ubuntu: `apt-get install rsync`; macOS: `brew install rsync`; conda: `conda "
    "install -c conda-forge rsync`), then run the download again"
)


@dataclass
class RsyncReport:
    """What a download did: the folder, the files it holds, how many were fetched this time, and
    the files fetched again after the checksum comparison."""

    path: Path
    files: int
    transferred: int
    repaired: list[str] = field(default_factory=list)


MINIMUM = (
    3,
    1,
)  # --info=progress2 and --no-inc-recursive (macOS's rsync 2.6.9 and openrsync lack them)
TIMEOUT_S = 300  # no data for this long: rsync stops (and the next run resumes)


def rsync_program() -> str | None:
    return shutil.which("rsync")


def _checked_program(source: str) -> str:
    exe = rsync_program()
    if exe is None:
        raise VPRBenchError(MISSING.format(source=source))
    try:
        banner = subprocess.run(
            [exe, "--version"], capture_output=True, text=True, timeout=30
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise VPRBenchError(f"{exe}: cannot run it ({exc})") from exc
    found = re.search(r"version\s+v?((\d+)\.(\d+)\S*)", banner)
    if found is None or (int(found.group(2)), int(found.group(3))) < MINIMUM:
        seen = f"version {found.group(1)}" if found else "an unknown version"
        raise VPRBenchError(
            f"{exe} is {seen}; downloading {source} needs rsync {MINIMUM[0]}.{MINIMUM[1]} or newer "
            "(install the rsync package: `brew install rsync` on macOS, `apt-get install rsync`)"
        )
    return exe


def _base(source: str, dest: Path) -> list[str]:
    exe = _checked_program(source)
    # -r recursive, -t modification times (so that a later run's quick check skips finished files);
    # no -z: the images are JPEGs already. An interrupted file waits in PARTIAL_DIR (in its folder).
    daemon = ["--contimeout=60"] if source.startswith("rsync://") else []
    return [exe, "-rt", "--no-inc-recursive", f"--partial-dir={PARTIAL_DIR}",
            f"--exclude={PARTIAL_DIR}/", f"--timeout={TIMEOUT_S}", *daemon,
            source.rstrip("/") + "/", str(dest) + "/"]  # fmt: skip


def _run(cmd: list[str], source: str, on_progress=None) -> list[str]:
    """Run rsync; returns its output lines (``\\r`` progress updates split as lines), raising with
    rsync's own message on failure (its errors come on the one pipe: a full second pipe would block
    rsync while this reads the first)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    assert proc.stdout is not None
    for line in proc.stdout:  # universal newlines: each "\r" update is a line
        line = line.strip()
        if not line:
            continue
        found = _TO_CHECK.search(line)
        if found and on_progress is not None:
            left, total = map(int, found.groups())
            on_progress(total - left, total)
        else:
            lines.append(line)
    if proc.wait() != 0:
        said = [line for line in lines if not line.startswith(_FILE)][-3:]
        message = " ".join(" ".join(said).split()) or f"exit code {proc.returncode}"
        raise VPRBenchError(
            f"rsync from {source} failed: {message}; run the download again to resume"
        )
    return lines


def _differing(source: str, dest: Path) -> list[str]:
    """Files of ``dest`` whose checksum differs from the source's, or that it lacks."""
    out = _run([*_base(source, dest), "--dry-run", "--checksum", f"--out-format={_FILE}%n"], source)
    return _files(out)


def _files(lines: list[str]) -> list[str]:
    """The files (not folders) named in rsync's ``--out-format`` lines."""
    names = (line[len(_FILE) :] for line in lines if line.startswith(_FILE))
    return sorted(name for name in names if not name.endswith("/"))


def rsync_fetch(source: str, dest: Path, progress: Progress | None = None) -> RsyncReport:
    """Copy the folder ``source`` (``rsync://host/module/path`` or a local folder) into ``dest``,
    resuming an earlier run, and verify every file by checksum against the source."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    tick = {"task": None, "done": 0}

    def on_progress(done: int, total: int) -> None:
        if progress is None:
            return
        if tick["task"] is None:
            tick["task"] = progress(f"rsync {source}", total, unit="files")
        tick["task"](max(0, done - tick["done"]))
        tick["done"] = max(done, tick["done"])

    out = _run([*_base(source, dest), "--info=progress2", f"--out-format={_FILE}%n"], source,
               on_progress)  # fmt: skip
    transferred = _files(out)
    repaired = _differing(source, dest)
    if repaired:  # same size and time, other bytes: fetch those again, whole
        for rel in repaired:
            (dest / rel).unlink(missing_ok=True)
        _run(_base(source, dest), source)
        still = _differing(source, dest)
        if still:
            shown = ", ".join(still[:5]) + (f" and {len(still) - 5} more" if len(still) > 5 else "")
            raise VPRBenchError(
                f"{dest}: {len(still)} file(s) differ from {source} after fetching them again: {shown}"
            )
    files = sum(1 for p in dest.rglob("*") if p.is_file() and PARTIAL_DIR not in p.parts)
    return RsyncReport(dest, files, len(transferred), repaired)
