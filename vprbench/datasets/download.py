"""Downloading archives: mirrors tried in order, resumable partial files, sha256 checks, safe extraction.

A download goes to ``<name>.part`` next to its final path and is renamed only once complete, verified
(against the published sha256 when there is one) and, for archives, recognised as a zip or tar, so a
file under its final name is always whole: an HTML error page served with HTTP 200 never becomes one.
An interrupted download resumes with an HTTP Range request from the same mirror only
(``<name>.part.source`` names it: two mirrors may serve different files, and splicing them gives a file
that is neither); a mirror that is down, serves a wrong file or a truncated one is skipped for the next;
when every mirror fails, the error lists what was tried and why. The sha256 of every finished file is
recorded in ``<name>.sha256`` and checked whenever the file is reused.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
import zlib
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
    target: str | None = None  # folder (relative to the unpack root) to unpack or copy it into


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


def is_archive(path: Path) -> bool:
    """Whether ``path`` is a zip or tar file (what ``extract`` can unpack)."""
    try:
        return zipfile.is_zipfile(path) or tarfile.is_tarfile(path)
    except OSError:
        return False


def _recorded(final: Path) -> Path:
    return final.with_name(final.name + ".sha256")


def discard(final: Path) -> None:
    """Delete a downloaded file and its recorded digest (a damaged archive must not be reused)."""
    for path in (final, _recorded(final)):
        path.unlink(missing_ok=True)


def _reusable(archive: Archive, final: Path) -> str | None:
    """The sha256 of an existing final file if it may be reused: it matches the published digest,
    or (none published) the digest recorded when it was downloaded."""
    if not final.is_file():
        return None
    digest = sha256_of(final)
    expected = archive.sha256
    if expected is None and _recorded(final).is_file():
        try:
            expected = json.loads(_recorded(final).read_text())["sha256"]
        except (ValueError, KeyError):
            expected = None
    if expected is not None and digest != expected:
        return None
    if expected is None and archive.extract and not is_archive(final):
        return None
    return digest


def fetch(
    archive: Archive,
    dest_dir: Path,
    progress: Progress | None = None,
    timeout: float = 60.0,
    attempts_per_mirror: int = 2,
) -> FetchReport:
    """Download ``archive`` into ``dest_dir`` (kept if already there and valid)."""
    from vprbench.atomic import write_text

    dest_dir.mkdir(parents=True, exist_ok=True)
    final = dest_dir / archive.name
    part = dest_dir / f"{archive.name}.part"
    source = dest_dir / f"{archive.name}.part.source"
    digest = _reusable(archive, final)
    if digest is not None:
        return FetchReport(final, digest, archive.sha256 is not None)
    discard(final)
    failures: list[str] = []
    for url in archive.mirrors:
        if part.exists() and (not source.is_file() or source.read_text() != url):
            part.unlink()  # begun on another mirror (or of unknown origin): never splice files
        write_text(source, url)
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
            if archive.extract and not is_archive(part):
                head = part.read_bytes()[:60].decode("latin-1").replace("\n", " ")
                failures.append(f"{url}: not a zip or tar archive (starts with {head!r})")
                part.unlink()
                break  # an error page served as the file: try the next mirror
            os.replace(part, final)
            source.unlink(missing_ok=True)
            write_text(
                _recorded(final),
                json.dumps({"sha256": digest, "url": url, "size": final.stat().st_size}) + "\n",
            )
            return FetchReport(final, digest, archive.sha256 is not None, failures)
    if not part.exists():
        source.unlink(missing_ok=True)
    tried = "; ".join(failures) or "no mirrors listed"
    raise VPRBenchError(f"could not download {archive.name}: {tried}")


def _safe_members(names: list[str], archive: Path) -> None:
    for name in names:
        p = Path(name)
        if p.is_absolute() or ".." in p.parts:
            raise VPRBenchError(f"{archive}: unsafe member path {name!r}; refusing to extract")


ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz")
_NESTED_DEPTH = 3


def _unpack(archive: Path, into: Path) -> None:
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as z:
            _safe_members(z.namelist(), archive)
            z.extractall(into)
    elif tarfile.is_tarfile(archive):
        if not hasattr(tarfile, "data_filter"):
            raise VPRBenchError(
                "safe tar extraction needs Python 3.10.12+ or 3.11.4+ (tarfile filters); "
                "upgrade Python"
            )
        with tarfile.open(archive) as t:
            _safe_members(t.getnames(), archive)
            t.extractall(into, filter="data")
    else:
        raise VPRBenchError(f"{archive}: neither a zip nor a tar archive")


def _unpack_nested(folder: Path, depth: int = 0) -> None:
    """Unpack archives found at the top of an unpacked archive (AmsterTime's download is a zip that
    holds AmsterTime-v1.0.zip: VDD download_amstertime.py unpacks both), then drop them."""
    for entry in sorted(folder.iterdir()):
        if entry.is_file() and entry.name.lower().endswith(ARCHIVE_SUFFIXES) and is_archive(entry):
            if depth >= _NESTED_DEPTH:
                raise VPRBenchError(f"{entry}: archives nested more than {_NESTED_DEPTH} deep")
            inner = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", dir=folder))
            _unpack(entry, inner)
            entry.unlink()
            _unpack_nested(inner, depth + 1)
            for item in inner.iterdir():
                _move_replacing(item, folder / item.name)
            inner.rmdir()


def _move_replacing(entry: Path, target: Path) -> None:
    if target.is_dir() and not target.is_symlink():
        shutil.rmtree(target)
    elif target.exists() or target.is_symlink():
        target.unlink()
    os.replace(entry, target)


def extract(archive: Path, dest: Path, target: str | None = None) -> Path:
    """Unpack a .zip, .tar, .tar.gz or .tgz (and the archives it holds at its top level) into
    ``dest``, or into ``dest/target`` when given, refusing members that would land outside it. An
    archive whose only top-level entry is a folder named ``target`` is unpacked the same way, so both
    layouts of a per-season archive end in ``dest/target``. The archive is unpacked in a temporary
    folder first; only then is each of its top-level entries moved into place (replacing an entry of
    the same name), so several archives can be unpacked side by side and a damaged one leaves ``dest``
    as it was. Returns the folder unpacked into."""
    into = dest / target if target else dest
    dest.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{archive.name}.", dir=dest))
    try:
        _unpack(archive, tmp)
        _unpack_nested(tmp)
        top = list(tmp.iterdir())
        if target and len(top) == 1 and top[0].is_dir() and top[0].name == Path(target).name:
            top = list(top[0].iterdir())
        into.mkdir(parents=True, exist_ok=True)
        for entry in top:
            _move_replacing(entry, into / entry.name)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        if isinstance(exc, VPRBenchError):
            raise
        raise VPRBenchError(f"{archive}: damaged archive ({exc})") from exc
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return into
