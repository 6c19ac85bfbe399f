"""Weights: resolve a file or URL (sha256-checked), read released checkpoints, load with strict keys.

Released files come in several wrappings; all are accepted as they are:
a bare state dict, a dict holding ``model_state_dict``/``state_dict``/``model``, with or without the
``module.`` prefixes that DataParallel adds.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

from vprbench.errors import VPRBenchError
from vprbench.paths import file_identity

_DIGESTS: dict[tuple[str, int, int], str] = {}
_TRACKERS: list[list] = []


@contextlib.contextmanager
def track_hashed_files() -> Iterator[list]:
    """Collects [path, size, mtime_ns] of every file :func:`sha256_file` reads inside the block: the
    weights files a model was built from (extract keeps them to know when a request must be redone)."""
    files: list = []
    _TRACKERS.append(files)
    try:
        yield files
    finally:
        _TRACKERS.remove(files)


def sha256_file(path: str | Path) -> str:
    """sha256 of a file, memoised on (path, size, mtime) so a large checkpoint is hashed once."""
    path = Path(path)
    identity = file_identity(path)
    if identity is None:
        raise FileNotFoundError(path)
    key = tuple(identity)
    for files in _TRACKERS:
        if identity not in files:
            files.append(identity)
    if key not in _DIGESTS:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _DIGESTS[key] = h.hexdigest()
    return _DIGESTS[key]


def is_url(spec: str) -> bool:
    return urlparse(spec).scheme in ("http", "https", "file", "ftp")


def cached_name(url: str) -> str:
    """The file name a download of ``url`` is kept under: a hash of the whole URL, then its basename,
    so two URLs that end alike (every Google Drive ``uc?id=...`` link) never share a file."""
    digest = hashlib.sha256(url.encode()).hexdigest()[:16]
    return f"{digest}-{Path(urlparse(url).path).name or 'weights.pth'}"


def download(url: str, dest_dir: Path, sha256: str | None = None) -> Path:
    """Download ``url`` into ``dest_dir`` (kept if its sha256 already matches); a partial or wrong
    file is never left under the final name."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    name = cached_name(url)
    final = dest_dir / name
    if final.is_file() and (sha256 is None or sha256_file(final) == sha256):
        return final
    fd, tmp = tempfile.mkstemp(dir=dest_dir, prefix=f".{name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as response:
            shutil.copyfileobj(response, out)
        if sha256 is not None:
            got = sha256_file(tmp)
            if got != sha256:
                raise VPRBenchError(f"{url}: sha256 mismatch: expected {sha256}, got {got}")
        from vprbench.atomic import public_mode

        public_mode(tmp)
        os.replace(tmp, final)
    except OSError as exc:
        raise VPRBenchError(f"{url}: download failed ({exc})") from exc
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return final


def resolve_weights(spec: str, cache_dir: Path | None, sha256: str | None = None) -> Path:
    """A local path for ``spec`` (a file, or a URL downloaded to ``<cache>/weights``), with its
    sha256 checked against ``sha256`` when one is given (``spec#sha256=<hex>`` also works)."""
    if "#sha256=" in spec:
        spec, sha256 = spec.split("#sha256=", 1)
    if is_url(spec):
        from vprbench.paths import cache_root

        path = download(spec, cache_root(cache_dir) / "weights", sha256)
    else:
        path = Path(spec).expanduser()
        if not path.is_file():
            raise VPRBenchError(f"{spec}: weights file not found")
    if sha256 is not None and sha256_file(path) != sha256:
        raise VPRBenchError(f"{path}: sha256 mismatch: expected {sha256}, got {sha256_file(path)}")
    return path


def _numpy_safe_globals() -> list:
    """The numpy objects that official training scripts save beside the weights (``recalls`` arrays,
    ``best_r5`` scalars: D2VPR/CricaVPR util.save_checkpoint): array reconstruction, dtypes, scalars.
    None of them can run code when unpickled.

    A pickle names an object by the module path of the numpy that saved it: ``numpy.core.multiarray``
    under numpy 1.x (CricaVPR.pth, SelaVPR_*.pth, pytorch-NetVlad's checkpoint: numpy 1.20 era) and
    ``numpy._core.multiarray`` under numpy 2 (D2VPR pins numpy 2.0.1). Both spellings of exactly
    ``_reconstruct`` and ``scalar`` are allowed whichever numpy runs here, as (object, name) pairs."""
    import numpy as np

    core = getattr(np, "_core", None) or np.core
    found: list = [np.ndarray, np.dtype]
    for name in ("_reconstruct", "scalar"):
        obj = getattr(core.multiarray, name)
        found += [(obj, f"{module}.{name}") for module in _NUMPY_MULTIARRAY]
    found += [type(np.dtype(t)) for t in "?bhilqBHILQefdgFDG"]  # numpy >= 1.25: dtype classes
    return found


# The module a numpy 1.x and a numpy 2 pickle name multiarray's objects by.
_NUMPY_MULTIARRAY = ("numpy.core.multiarray", "numpy._core.multiarray")


# Lightning's AttributeDict (a plain dict subclass), in which a Lightning ``.ckpt`` may keep its
# ``hyper_parameters`` beside the ``state_dict`` (CliqueMining, DINO-Mix), where each Lightning
# version defines it: read as a plain dict, then dropped. Lightning need not be installed, and
# nothing runs.
_LIGHTNING_ATTRIBUTE_DICT = (
    "pytorch_lightning.utilities.parsing.AttributeDict",
    "lightning_fabric.utilities.data.AttributeDict",
    "lightning.fabric.utilities.data.AttributeDict",
)


def is_safetensors(path: str | Path) -> bool:
    """Whether ``path`` is a safetensors file: an 8-byte little-endian header length, then a JSON
    header that starts with '{'."""
    with open(path, "rb") as f:
        head = f.read(9)
    if len(head) < 9 or head[8:9] != b"{":
        return False
    return 2 <= int.from_bytes(head[:8], "little") <= os.path.getsize(path) - 8


def _require_safe_globals() -> None:
    """``torch.serialization.safe_globals`` with (object, name) pairs exists from torch 2.6, the
    floor pyproject.toml declares: an older torch is said to be one, never blamed on the file."""
    version = tuple(int(p) for p in torch.__version__.split("+")[0].split(".")[:2])
    if version < (2, 6) or not hasattr(torch.serialization, "safe_globals"):
        raise VPRBenchError(
            f"reading checkpoints needs torch >= 2.6 (torch.serialization.safe_globals); this is "
            f"torch {torch.__version__}: pip install 'torch>=2.6'"
        )


def _why_unreadable(exc: Exception) -> str:
    """One line for torch.load's failure (its own messages run to several paragraphs)."""
    import pickle
    import re

    found = re.search(r"GLOBAL (\S+)", str(exc))
    if isinstance(exc, pickle.UnpicklingError) and found:
        return (
            f"not a readable PyTorch checkpoint: it holds {found.group(1)}, which vprbench does not "
            "unpickle (only tensors, numbers and numpy values)"
        )
    return "not a PyTorch checkpoint (neither a torch.save zip nor a pickle of tensors)"


def read_checkpoint(path: str | Path, with_meta: bool = False):
    """The state dict inside a released checkpoint file, unwrapped and without ``module.``.

    Loaded with ``weights_only=True`` (no arbitrary code), allowing the numpy values that released
    checkpoints carry beside the weights and Lightning's hyper-parameter dict; only the state dict
    is kept. A safetensors file (MegaLoc's ``model.safetensors``) is read as one. ``with_meta``:
    also return the ``vprbench`` block of a checkpoint written by `vprbench train` (model name and options), or None."""
    if is_safetensors(path):
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            obj = load_file(str(path), device="cpu")
        except SafetensorError as exc:
            raise VPRBenchError(f"{path}: not a readable safetensors file ({exc})") from None
        return (obj, None) if with_meta else obj
    _require_safe_globals()
    allowed = _numpy_safe_globals() + [(dict, name) for name in _LIGHTNING_ATTRIBUTE_DICT]
    try:
        with torch.serialization.safe_globals(allowed):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several unrelated types for a bad file
        raise VPRBenchError(f"{path}: {_why_unreadable(exc)}") from None
    meta = obj.get("vprbench") if isinstance(obj, dict) else None
    for key in ("model_state_dict", "state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise VPRBenchError(f"{path}: expected a state dict of tensors")
    if obj and all(k.startswith("module.") for k in obj):
        obj = {k[len("module.") :]: v for k, v in obj.items()}
    return (obj, meta if isinstance(meta, dict) else None) if with_meta else obj


def strict_load(module: nn.Module, state_dict: dict[str, torch.Tensor], source: str) -> None:
    """Load with strict keys and shapes; the error lists what is missing, unexpected or misshapen."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    misshapen = sorted(
        f"{k} {tuple(state_dict[k].shape)} vs {tuple(own[k].shape)}"
        for k in set(own) & set(state_dict)
        if own[k].shape != state_dict[k].shape
    )
    problems = []
    for label, items in (
        ("missing", missing),
        ("unexpected", unexpected),
        ("wrong shape", misshapen),
    ):
        if items:
            shown = ", ".join(items[:4]) + (f" (+{len(items) - 4} more)" if len(items) > 4 else "")
            problems.append(f"{len(items)} {label} key(s): {shown}")
    if problems:
        raise VPRBenchError(f"{source}: weights do not match the model: " + "; ".join(problems))
    module.load_state_dict(state_dict, strict=True)
