"""The HDF5 descriptor store.

One file per cache key: ``<cache>/descriptors/<dataset>/<model>/<digest>.h5`` holding ``database`` and
``queries`` (a protocol over a shared database: the queries only, its key naming the database's entry,
``descriptors/<shared name>/<model>/<digest>.h5``, as ``database_entry``) ([N, D] float32, or float16 with ``--store fp16``: ``store`` in the key), ``database_valid`` / ``queries_valid`` ([N] bool) and the key as JSON in
its attributes. The key covers everything that changes a descriptor (model, options, weights digest,
image size, interpolation, normalisation, dtype, the images themselves (resolved root plus each file's
path, size and mtime), bad-image policy, and the inference batch size and batch order of batch-dependent
models): a different key is a different file, and a file is only read if its stored key equals the one
asked for.

While an extraction runs, finished batches are kept as ``<digest>.partial/<split>-<batch>.npz`` shards,
each renamed into place when written, so a killed run resumes at the first missing batch. The final
.h5 is filled as the batches are written (``Assembly``), as ``<digest>.partial/final.h5.tmp``, then synced
and renamed: a file at the final path is always complete.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np

from vprbench.atomic import public_mode, write_npz, write_text
from vprbench.errors import VPRBenchError

FORMAT_VERSION = 2  # 2: shards carry their dataset indices (batches in any order)
SPLITS = ("database", "queries")


def key_digest(key: dict) -> str:
    """A stable 20-hex-digit digest of a JSON-able cache key."""
    return hashlib.sha256(canonical_json(key).encode()).hexdigest()[:20]


def canonical_json(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


STORE_DTYPES = {"fp32": np.float32, "fp16": np.float16}


def entry_splits(key: dict) -> tuple[str, ...]:
    """The splits the entry of ``key`` holds: both, or one (a shared database and its queries are
    two entries, the queries' key naming the database's as ``database_entry``)."""
    return tuple(key.get("splits", SPLITS))


def store_dtype(key: dict):
    """The numpy dtype descriptors of ``key`` are stored in."""
    return STORE_DTYPES[key.get("store", "fp32")]


class DiskRows:
    """The rows of a contiguous, uncompressed HDF5 dataset (as vprbench writes them), read from the
    file when indexed and never held whole: ``rows[a:b]``, ``rows[index_array]`` and
    ``rows[bool_mask]`` return arrays; ``np.asarray(rows)`` reads everything. A search indexes one
    chunk of rows at a time, so its memory does not grow with the database (a memory map would: the
    file pages it touches count as the process's own). Reads go around the page cache's accounting,
    not around the page cache."""

    def __init__(self, path: Path, offset: int, shape: tuple[int, int], dtype) -> None:
        self.path, self.offset = Path(path), int(offset)
        self.shape, self.dtype = tuple(int(s) for s in shape), np.dtype(dtype)
        self.ndim = 2
        self._row_bytes = self.shape[1] * self.dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0]

    def _read_span(self, handle, lo: int, hi: int) -> np.ndarray:
        handle.seek(self.offset + lo * self._row_bytes)
        data = handle.read((hi - lo) * self._row_bytes)
        if len(data) != (hi - lo) * self._row_bytes:
            raise VPRBenchError(f"{self.path}: truncated (rows {lo}-{hi} of {self.shape[0]})")
        return np.frombuffer(data, dtype=self.dtype).reshape(hi - lo, self.shape[1])

    def __getitem__(self, index) -> np.ndarray:
        if isinstance(index, tuple):  # rows first, then the rest as numpy does it
            return self[index[0]][(slice(None), *index[1:])]
        if isinstance(index, slice):
            lo, hi, step = index.indices(self.shape[0])
            if step == 1:
                with open(self.path, "rb") as handle:
                    return self._read_span(handle, lo, max(lo, hi)).copy()
        rows = np.arange(self.shape[0])[index]
        if rows.ndim == 0:
            return self[int(rows) : int(rows) + 1][0]
        out = np.empty((len(rows), self.shape[1]), dtype=self.dtype)
        if not len(rows):
            return out
        # consecutive runs of rows, one read each (a chunk of valid rows is one or a few runs)
        breaks = np.flatnonzero(np.diff(rows) != 1) + 1
        with open(self.path, "rb") as handle:
            for start, stop in zip(np.r_[0, breaks], np.r_[breaks, len(rows)], strict=True):
                out[start:stop] = self._read_span(handle, int(rows[start]), int(rows[stop - 1]) + 1)
        return out

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        whole = self[0 : self.shape[0]]
        return whole if dtype is None else whole.astype(dtype, copy=False)


def disk_rows(path: Path, name: str) -> DiskRows | None:
    """:class:`DiskRows` of HDF5 dataset ``name``, or None when it is not stored contiguous and
    uncompressed (then it is read whole)."""
    with h5py.File(path, "r") as f:
        ds = f[name]
        offset = ds.id.get_offset()
        if ds.chunks is not None or ds.compression is not None or offset is None or not ds.size:
            return None
        return DiskRows(path, offset, ds.shape, ds.dtype)


class CachedDescriptors:
    """Descriptors of one (model, dataset, settings) key, read from a complete cache file (two for a
    protocol over a shared database: ``paths`` names each split's file; ``path`` is the key's own). The
    validity masks are read at once; the descriptors when first used (``vprbench extract`` of 100,000
    images never holds them all in memory), or as :class:`DiskRows` (``rows``), which evaluation
    searches without ever reading the database whole."""

    def __init__(self, path: Path, key: dict, database: np.ndarray | None = None,
                 queries: np.ndarray | None = None, database_valid: np.ndarray | None = None,
                 queries_valid: np.ndarray | None = None,
                 paths: dict[str, Path] | None = None) -> None:  # fmt: skip
        self.path, self.key = Path(path), key
        self.paths = {split: Path(p) for split, p in (paths or dict.fromkeys(SPLITS, path)).items()}
        self._arrays = {"database": database, "queries": queries}
        self.database_valid, self.queries_valid = database_valid, queries_valid

    def _read(self, split: str) -> np.ndarray:
        if self._arrays[split] is None:
            with h5py.File(self.paths[split], "r") as f:
                self._arrays[split] = f[split][...]
        return self._arrays[split]

    def rows(self, split: str) -> np.ndarray | DiskRows:
        """``split`` for a search: the array if it is already in memory, else rows read from disk
        as they are indexed (the whole split if the file's layout does not allow that)."""
        if self._arrays[split] is not None:
            return self._arrays[split]
        rows = disk_rows(self.paths[split], split)
        return self._read(split) if rows is None else rows

    @property
    def database(self) -> np.ndarray:
        return self._read("database")

    @property
    def queries(self) -> np.ndarray:
        return self._read("queries")

    def shape(self, split: str) -> tuple[int, int]:
        """[rows, dim] of a split, without reading it."""
        if self._arrays[split] is not None:
            return self._arrays[split].shape
        with h5py.File(self.paths[split], "r") as f:
            return f[split].shape


class DescriptorCache:
    """The descriptor store under ``root`` (see the module docstring for the layout)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path_for(self, key: dict) -> Path:
        return self.root / "descriptors" / key["dataset"] / key["model"] / f"{key_digest(key)}.h5"

    def partial_dir(self, key: dict) -> Path:
        return self.path_for(key).with_suffix(".partial")

    def load(self, key: dict) -> CachedDescriptors | None:
        """The complete entry for ``key``, or None. A file whose stored key differs is ignored. A
        key naming a ``database_entry`` is complete when that entry is too."""
        found = self._load_splits(key)
        if found is None:
            return None
        paths = dict.fromkeys(found, self.path_for(key))
        if "database_entry" in key:
            database = self._load_splits(key["database_entry"])
            if database is None or "database" not in database:
                return None
            found |= database
            paths["database"] = self.path_for(key["database_entry"])
        if set(found) != set(SPLITS):
            raise VPRBenchError(f"{self.path_for(key)}: the entry holds {sorted(found)} only")
        return CachedDescriptors(path=self.path_for(key), key=key, paths=paths,
                                 database_valid=found["database"], queries_valid=found["queries"])  # fmt: skip

    def has(self, key: dict) -> bool:
        """Whether the file of ``key`` itself is complete (not the entry it may name)."""
        return self._load_splits(key) is not None

    def _load_splits(self, key: dict) -> dict[str, np.ndarray] | None:
        """{split: validity mask} of the complete file of ``key``, or None."""
        path = self.path_for(key)
        if not path.is_file():
            return None
        try:
            with h5py.File(path, "r") as f:
                if json.loads(f.attrs["key"]) != json.loads(canonical_json(key)):
                    return None
                valid = {}
                for split in entry_splits(key):  # a truncated or foreign file fails here, not later
                    if f[split].shape[0] != f[f"{split}_valid"].shape[0]:
                        raise KeyError(f"{split} and {split}_valid differ in length")
                    valid[split] = f[f"{split}_valid"][...]
                return valid
        except (OSError, KeyError) as exc:
            raise VPRBenchError(f"{path}: cache file is unreadable ({exc}); delete it") from exc

    @contextlib.contextmanager
    def lock(self, key: dict) -> Iterator[None]:
        """Exclusive lock on one key, so two processes never write the same entry."""
        path = self.path_for(key).with_suffix(".lock")
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    # --- partial shards -------------------------------------------------------------------------

    def open_partial(self, key: dict, batch_size: int) -> tuple[Path, int]:
        """The partial folder for ``key`` and the batch size its shards were made with.

        A resumed run keeps the batch size of the shards already written, so that every batch is
        computed exactly as an uninterrupted run would have computed it.
        """
        folder = self.partial_dir(key)
        meta = folder / "meta.json"
        if meta.is_file():
            info = json.loads(meta.read_text())
            if info.get("key") == json.loads(canonical_json(key)):
                return folder, int(info["batch_size"])
            shutil.rmtree(folder)
        folder.mkdir(parents=True, exist_ok=True)
        write_text(meta, json.dumps({"key": key, "batch_size": batch_size}))
        return folder, batch_size

    @staticmethod
    def shard_path(folder: Path, split: str, batch: int) -> Path:
        return folder / f"{split}-{batch:06d}.npz"

    @staticmethod
    def write_shard(
        folder: Path,
        split: str,
        batch: int,
        descriptors: np.ndarray,
        valid: np.ndarray,
        indices: np.ndarray,
    ) -> None:
        """Write one batch's descriptors [B, D] float32, validity [B] bool and the dataset indices
        [B] int64 of its images (batches may follow an order other than the dataset's), atomically."""
        write_npz(
            DescriptorCache.shard_path(folder, split, batch),
            descriptors=descriptors.astype(np.float32),
            valid=valid.astype(bool),
            indices=np.asarray(indices, dtype=np.int64),
        )


class Assembly:
    """The final .h5 of one key, filled while the extraction runs: each batch's descriptors go into it
    as its shard is written (``add``, from extraction's writer thread), so that ``finish`` has only the
    batches it did not see to read from their shards (those of an earlier, interrupted run, or of other
    ranks) before the file is synced and renamed into place. For 2,048 10,752-d descriptors that tail
    took 0.086 s on a 2-core machine, against 0.314 s to assemble every shard after the last batch
    (``benchmarks/host_costs.py``): a quarter of the H100's d2vpr forward time for them, GPU idle.

    The file lives in the partial folder while it is filled: a killed run leaves it there, and the next
    run starts it again (the shards hold every finished batch)."""

    NAME = "final.h5.tmp"  # not *.h5: nothing in the cache looks complete before it is

    def __init__(
        self, cache: DescriptorCache, key: dict, folder: Path, counts: dict[str, int]
    ) -> None:
        self.cache, self.key, self.folder, self.counts = cache, key, Path(folder), counts
        self.path = self.folder / self.NAME
        self.path.unlink(missing_ok=True)
        self._file = h5py.File(self.path, "w")
        self._valid = {split: np.zeros(n, bool) for split, n in counts.items()}
        self._seen = {split: np.zeros(n, bool) for split, n in counts.items()}
        self._added: dict[str, set[int]] = {split: set() for split in counts}

    def add(self, split: str, batch: int, descriptors: np.ndarray, valid: np.ndarray,
            rows: np.ndarray) -> None:  # fmt: skip
        """One batch: descriptors [B, D] (D = 0: no readable image), validity [B], dataset rows [B]."""
        rows = np.asarray(rows, dtype=np.int64)
        if descriptors.shape[1] and len(rows):
            if split not in self._file:
                self._file.create_dataset(split, shape=(self.counts[split], descriptors.shape[1]),
                                          dtype=store_dtype(self.key), fillvalue=0.0)  # fmt: skip
            out = self._file[split]
            if out.shape[1] != descriptors.shape[1]:
                raise VPRBenchError(f"{self.folder}: {split} batch {batch} is {descriptors.shape[1]}-d, "
                                    f"earlier batches {out.shape[1]}-d")  # fmt: skip
            if (np.diff(rows) < 0).any():  # h5py writes rows in increasing order
                order = np.argsort(rows)
                rows, descriptors, valid = rows[order], descriptors[order], valid[order]
            descriptors = descriptors.astype(store_dtype(self.key), copy=False)
            if rows[-1] - rows[0] == len(rows) - 1:  # consecutive: one slab
                out[rows[0] : rows[-1] + 1] = descriptors
            else:
                out[rows] = descriptors
        self._valid[split][rows] = valid
        self._seen[split][rows] = True
        self._added[split].add(batch)

    def finish(self, batch_size: int) -> Path:
        """Read the batches not added from their shards, write the validity masks and the key, sync,
        rename to the key's path, and drop the partial folder."""
        path = self.cache.path_for(self.key)
        try:
            for split, n in self.counts.items():
                for b in range(-(-n // batch_size)):
                    shard = self.cache.shard_path(self.folder, split, b)
                    if b not in self._added[split] and shard.is_file():
                        with np.load(shard) as z:
                            self.add(split, b, z["descriptors"], z["valid"], z["indices"])
                if not self._seen[split].all():
                    missing = int((~self._seen[split]).sum())
                    raise VPRBenchError(f"{self.folder}: {split} shards miss {missing} of {n} rows")
                if split not in self._file:  # no readable image at all
                    self._file.create_dataset(split, shape=(n, 0), dtype=store_dtype(self.key))
                self._file.create_dataset(f"{split}_valid", data=self._valid[split])
            self._file.attrs["key"] = canonical_json(self.key)
            self._file.attrs["format_version"] = FORMAT_VERSION
            self._file.attrs["batch_size"] = batch_size
            self._file.close()
            with open(self.path, "rb") as handle:
                os.fsync(handle.fileno())
            public_mode(self.path)
            os.replace(self.path, path)
        finally:
            self.close()
        shutil.rmtree(self.folder, ignore_errors=True)
        return path

    def close(self) -> None:
        """Close the file (left in the partial folder: the next run starts it again)."""
        if self._file.id.valid:
            self._file.close()
