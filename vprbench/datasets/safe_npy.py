"""Reading ``.npy`` files that hold object arrays (VPR-Bench ``ground_truth_new.npy``, gsv-cities
``*_gt.npy``) without running code from them.

``np.load(allow_pickle=True)`` unpickles whatever the file names, so a downloaded file could run any
function. Here plain arrays load with ``allow_pickle=False``; an object array is unpickled by an
Unpickler that resolves only numpy's array, dtype and scalar reconstruction: the elements can be numbers,
strings, lists, tuples, dicts and arrays, nothing that calls a function.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np

from vprbench.errors import VPRBenchError

_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
}


class _ArraysOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED or (module == "numpy.dtypes" and name.endswith("DType")):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f"refused to load {module}.{name} (only numpy arrays and numbers)"
        )


def load_npy(path: Path, what: str) -> np.ndarray:
    """A ``.npy`` file as an array; object arrays through the restricted unpickler. Any damaged,
    truncated or hostile file is one VPRBenchError naming the file and what was expected."""
    path = Path(path)
    if not path.is_file():
        raise VPRBenchError(f"{path}: missing {what}")
    try:
        with open(path, "rb") as f:
            fmt = np.lib.format
            version = fmt.read_magic(f)
            header = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
            shape, _, dtype = header(f)
            if not dtype.hasobject:
                f.seek(0)
                return np.load(f, allow_pickle=False)
            array = _ArraysOnly(io.BytesIO(f.read())).load()
    except pickle.UnpicklingError as exc:
        raise VPRBenchError(f"{path}: not a safe {what} file: {exc}") from None
    except (ValueError, OSError, EOFError, TypeError, AttributeError, IndexError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise VPRBenchError(f"{path}: cannot read {what} as a .npy file ({first})") from None
    if not isinstance(array, np.ndarray) or array.shape != shape:
        raise VPRBenchError(f"{path}: {what}: the pickled array does not match the file header")
    return array
