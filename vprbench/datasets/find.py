"""Finding a source's files: the one file or folder below a root whose path ends with a name."""

from __future__ import annotations

from pathlib import Path

from vprbench.errors import VPRBenchError


def find_one(root: Path, name: str, folder: bool = False) -> Path:
    """The single file or folder at or below ``root`` whose path ends with ``name`` (one name, or
    several joined by /); ``folder``: only folders. Errors name what is missing."""
    direct = root / name
    if direct.is_dir() if folder else direct.exists():
        return direct
    tail = "/" + name.strip("/")
    found = sorted(p for p in root.rglob(Path(name).name)
                   if (p.is_dir() or not folder) and p.as_posix().endswith(tail))  # fmt: skip
    what = f"folder {name.strip('/')}/" if folder else name
    if not found:
        raise VPRBenchError(f"{root}: missing {what}")
    if len(found) > 1:
        raise VPRBenchError(f"{root}: several {what} found: {', '.join(map(str, found[:3]))}")
    return found[0]
