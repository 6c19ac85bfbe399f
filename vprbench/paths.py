"""Where vprbench keeps its files: formatted datasets, the descriptor cache and results.

Each location has one documented default and one environment variable; command-line flags override both.

- datasets: ``$VPRBENCH_DATA``, else ``$XDG_DATA_HOME/vprbench/datasets`` (``~/.local/share/...``)
- cache:    ``$VPRBENCH_CACHE``, else ``$XDG_CACHE_HOME/vprbench`` (``~/.cache/vprbench``)
- results:  ``$VPRBENCH_RESULTS``, else ``./results``
"""

from __future__ import annotations

import os
from pathlib import Path


def _xdg(var: str, fallback: str) -> Path:
    value = os.environ.get(var)
    return Path(value) if value else Path.home() / fallback


def data_root(override: str | os.PathLike | None = None) -> Path:
    """The folder that holds formatted datasets, one sub-folder per dataset name."""
    if override:
        return Path(override)
    if os.environ.get("VPRBENCH_DATA"):
        return Path(os.environ["VPRBENCH_DATA"])
    return _xdg("XDG_DATA_HOME", ".local/share") / "vprbench" / "datasets"


def cache_root(override: str | os.PathLike | None = None) -> Path:
    """The folder of the descriptor cache (and downloaded weights)."""
    if override:
        return Path(override)
    if os.environ.get("VPRBENCH_CACHE"):
        return Path(os.environ["VPRBENCH_CACHE"])
    return _xdg("XDG_CACHE_HOME", ".cache") / "vprbench"


def results_root(override: str | os.PathLike | None = None) -> Path:
    """The folder where run records and predictions are written."""
    if override:
        return Path(override)
    return Path(os.environ.get("VPRBENCH_RESULTS", "results"))


def file_identity(path: str | os.PathLike) -> list | None:
    """[resolved path, size, mtime_ns] of a file, or None if it is not there: how vprbench tells
    that a file changed without reading it (the weights digest memo, the request records)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [str(Path(path).resolve()), st.st_size, st.st_mtime_ns]
