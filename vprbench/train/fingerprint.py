"""What a training stage's inputs are, by content: the GSV-Cities data frames and weights files by
sha256, not by path (a relative path, a copy or a new download must not decide whether a stage is
reused or a run resumes)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from vprbench.models.weights import sha256_file  # memoised on (path, size, mtime)


def data_fingerprint(data: str) -> str:
    """sha256 over the names and bytes of a GSV-Cities folder's Dataframes/*.csv (the places and images
    a stage reads), or 'absent' where the folder is not here (a dry run elsewhere)."""
    from vprbench.train.gsv import resolve_data_root

    frames = resolve_data_root(data) / "Dataframes"
    if not frames.is_dir():
        return f"absent:{data}"
    digest = hashlib.sha256()
    for path in sorted(frames.glob("*.csv")):
        digest.update(path.name.encode() + b"\0")
        digest.update(sha256_file(path).encode())
    return digest.hexdigest()


def weights_fingerprint(spec: str | None) -> str | None:
    """A local weights file by its sha256; anything else (official, a URL, none) as written, since
    the loader checks those against their published sha256 where one is known."""
    if spec is None or not Path(spec).is_file():
        return spec
    return "sha256:" + sha256_file(Path(spec))
