"""Downloading archives: mirrors tried in order, resumable partial files, sha256 checks, safe extraction.

A download goes to ``<name>.part`` next to its final path and is renamed only once complete and (when a
checksum is known) verified, so a file under its final name is always whole. An interrupted download
resumes with an HTTP Range request; a mirror that is down, serves a wrong file or a truncated one is
skipped for the next; when every mirror fails, the error lists what was tried and why.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from vprbench.errors import VPRBenchError

CHUNK = 1 << 20
Progress = Callable[[str, int], Callable[[int], None]]


@dataclass(frozen=True)
class Archive:
    """One file to fetch: its name on disk, the mirrors that serve it, its sha256 if published."""

    name: str
    mirrors: tuple[str, ...]
    sha256: str | None = None
    extract: bool = True


@dataclass
class FetchReport:
    """What happened: the path, the sha256 of what was fetched, and each failed attempt."""

    path: Path
    sha256: str
    verified: bool
    failures: list[str] = field(default_factory=list)


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _download_once(url: str, part: Path, timeout: float, progress: Progress | None) -> None:
    """Append to ``part`` from where it stops (Range request); restart if the server ignores Range."""
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # the partial file is already complete
            return
        raise
    with response:
        resumed = response.status == 206
        total = response.headers.get("Content-Length")
        total = int(total) + (have if resumed else 0) if total else 0
        tick = progress(part.name[: -len(".part")], total) if progress and total else None
        if tick and resumed:
            tick(have)
        with open(part, "ab" if resumed else "wb") as out:
            for chunk in iter(lambda: response.read(CHUNK), b""):
                out.write(chunk)
                if tick:
                    tick(len(chunk))
        if total and part.stat().st_size != total:
            raise OSError(f"connection closed at {part.stat().st_size} of {total} bytes")


def fetch(
    archive: Archive,
    dest_dir: Path,
    progress: Progress | None = None,
    timeout: float = 60.0,
    attempts_per_mirror: int = 2,
) -> FetchReport:
    """Download ``archive`` into ``dest_dir`` (kept if already there and valid)."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    final = dest_dir / archive.name
    part = dest_dir / f"{archive.name}.part"
    if final.is_file():
        digest = sha256_of(final)
        if archive.sha256 is None or digest == archive.sha256:
            return FetchReport(final, digest, archive.sha256 is not None)
        final.unlink()
    failures: list[str] = []
    for url in archive.mirrors:
        for attempt in range(1, attempts_per_mirror + 1):
            try:
                _download_once(url, part, timeout, progress)
            except urllib.error.HTTPError as exc:
                failures.append(f"{url}: HTTP {exc.code} {exc.reason}")
                break  # the server answered: retrying the same URL will not help
            except (urllib.error.URLError, OSError, ValueError) as exc:
                failures.append(f"{url} (attempt {attempt}): {getattr(exc, 'reason', exc)}")
                continue  # a partial file stays and the next attempt resumes it
            digest = sha256_of(part)
            if archive.sha256 is not None and digest != archive.sha256:
                failures.append(f"{url}: sha256 {digest} != expected {archive.sha256}")
                part.unlink()
                break  # this mirror serves a wrong file: try the next one
            os.replace(part, final)
            return FetchReport(final, digest, archive.sha256 is not None, failures)
    tried = "; ".join(failures) or "no mirrors listed"
    raise VPRBenchError(f"could not download {archive.name}: {tried}")


def _safe_members(names: list[str], archive: Path) -> None:
    for name in names:
        p = Path(name)
        if p.is_absolute() or ".." in p.parts:
            raise VPRBenchError(f"{archive}: unsafe member path {name!r}; refusing to extract")


def extract(archive: Path, dest: Path) -> Path:
    """Unpack a .zip, .tar, .tar.gz or .tgz into ``dest``, refusing members that would land outside
    it. The archive is unpacked in a temporary folder first; only then is each of its top-level
    entries moved into ``dest`` (replacing an entry of the same name), so several archives can be
    unpacked side by side and a damaged one leaves ``dest`` as it was. Returns ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{archive.name}.", dir=dest))
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as z:
                _safe_members(z.namelist(), archive)
                z.extractall(tmp)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as t:
                _safe_members(t.getnames(), archive)
                t.extractall(tmp, filter="data")
        else:
            raise VPRBenchError(f"{archive}: neither a zip nor a tar archive")
        for entry in tmp.iterdir():
            target = dest / entry.name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
            os.replace(entry, target)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError) as exc:
        raise VPRBenchError(f"{archive}: damaged archive ({exc})") from exc
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest
