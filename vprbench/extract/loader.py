"""Batches of images prepared by a pool of threads (or of processes), in order, a few batches ahead
of the consumer.

Threads (the default on the CPU): PIL decodes and resizes, and numpy normalises, with the GIL
released (2 threads decode 1.8x as fast as 1 on 2 cores), so nothing is forked and no batch is copied
between processes. But each image still takes the GIL about ten times, and so slows a main thread
that needs it often, as on CUDA, where it queues every operation of the forward pass:
:class:`ProcessDecoders` (``--loader processes``, the default on CUDA) decodes in spawned processes
into shared memory instead.

The threads share out images, not batches: every thread works on the oldest batch first, so the
first batch is ready after batch / threads images' time, not a whole batch's (a DataLoader worker
prepares a whole batch alone: with 64 images of 5 ms, 0.3 s before the GPU gets anything, per
split). One more thread stacks each batch once its images are ready and, on CUDA, pins it, so the
copy to the GPU does not block and the consumer's thread does neither."""

from __future__ import annotations

import atexit
import contextlib
import multiprocessing
import os
import queue
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures import wait as wait_for
from concurrent.futures.process import BrokenProcessPool
from multiprocessing.shared_memory import SharedMemory
from pathlib import Path

import numpy as np

from vprbench.errors import VPRBenchError

# Batches in preparation ahead of the one in use (as DataLoader's prefetch_factor, but in all).
PREFETCH = 3


class ThreadedBatches:
    """``collate([items[i] for i in batch])`` for each batch of ``batches``, in order. ``threads``:
    0 prepares each batch in the calling thread when it is asked for. ``pin``: move each tensor of
    the result (top level, or in a top-level list) to pinned memory."""

    def __init__(
        self,
        items: Sequence,
        batches: list[list[int]],
        threads: int,
        collate: Callable[[list], tuple],
        pin: bool = False,
    ) -> None:
        self.items, self.batches, self.threads = items, batches, threads
        self.collate, self.pin = collate, pin

    def __len__(self) -> int:
        return len(self.batches)

    def _finish(self, items: list) -> tuple:
        out = self.collate(items)
        return tuple(_pinned(x) for x in out) if self.pin else out

    def __iter__(self) -> Iterator[tuple]:
        if self.threads == 0:
            for batch in self.batches:
                yield self._finish([self.items[i] for i in batch])
            return
        images = ThreadPoolExecutor(self.threads, thread_name_prefix="vprbench-loader")
        assembler = ThreadPoolExecutor(1, thread_name_prefix="vprbench-collate")
        todo = iter(self.batches)

        def submit() -> Future | None:
            if (batch := next(todo, None)) is None:
                return None
            # images in batch order, so the pool's FIFO queue finishes the oldest batch first
            parts = [images.submit(self.items.__getitem__, i) for i in batch]
            return assembler.submit(lambda: self._finish([p.result() for p in parts]))

        try:
            yield from _in_order(submit)
        finally:  # also when the consumer stops early (an error, a bad image): drop the rest
            images.shutdown(wait=True, cancel_futures=True)
            assembler.shutdown(wait=True, cancel_futures=True)


def _in_order(submit: Callable[[], Future | None]) -> Iterator:
    """The results of the futures that ``submit`` returns (None: no batch left), in order, with
    ``PREFETCH`` in flight: batch k + PREFETCH is submitted only once batch k has been taken, which
    is what lets :class:`ProcessDecoders` reuse batch k's slot of its ring."""
    pending = deque(f for f in (submit() for _ in range(PREFETCH)) if f is not None)
    while pending:
        ready = pending.popleft().result()
        if (nxt := submit()) is not None:
            pending.append(nxt)
        yield ready


class ProcessDecoders:
    """Images decoded and resized (:func:`vprbench.datasets.images.load_array`) by ``processes``
    spawned processes, each writing its images straight into a ring of ``PREFETCH`` batches in
    shared memory (only error messages come back through pipes): ``--loader processes``.

    Loader threads share the consumer's GIL. Each image takes and gives it back about ten times
    (opening, PIL's Python-level header parsing, decoding, resizing, numpy), and a main thread that
    queues a forward pass on CUDA needs it between every two of its ~1,500 operations (d2vpr), so
    many busy threads slow the very thread that keeps the GPU fed
    (``benchmarks/loader_gil.py`` measures it). Processes leave the main process's GIL to the main
    thread, the thread that copies each batch out of the ring (into pinned memory on CUDA) and the
    writer thread.

    The processes are spawned (never forked: a process holding a CUDA context must not fork) once
    and serve every split and every later extraction with the same ring shape (``decoders``); they
    import numpy and PIL, not torch. Batches come out as :class:`ThreadedBatches` makes them with
    ``collate_images``: the same pixels, channels last."""

    def __init__(self, processes: int, shape: tuple[int, ...], dtype: str) -> None:
        self.processes, self.shape, self.dtype = processes, tuple(shape), np.dtype(dtype)
        self.broken = False  # a process died: the pool takes no more work
        size = int(np.prod(self.shape)) * self.dtype.itemsize
        _check_shared_memory(size)
        self._memory = SharedMemory(create=True, size=max(1, size))
        try:
            self.ring = np.ndarray(self.shape, self.dtype, buffer=self._memory.buf)
            self.pool = ProcessPoolExecutor(
                processes,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_attach_ring,
                initargs=(self._memory.name, self.shape, self.dtype.str),
            )
        except BaseException:
            self.ring = None
            self._memory.close()
            self._memory.unlink()
            raise

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        del self.ring
        self._memory.close()
        self._memory.unlink()

    def batches(
        self, paths: Sequence[Path], batches: list[list[int]], preprocess, normalise: bool,
        pin: bool = False,
    ) -> Iterator[tuple]:  # fmt: skip
        """(indices tensor, [B, 3, H, W] channels-last tensor, errors) for each batch of
        ``batches`` (indices into ``paths``), in order, ``PREFETCH`` batches in preparation. The
        images of a batch are shared out among the processes, oldest batch first."""
        import torch

        todo = iter(enumerate(batches))
        parts: list[Future] = []  # the processes' work not yet done, for an early stop
        collector = ThreadPoolExecutor(1, thread_name_prefix="vprbench-collate")

        def collect(slot: int, batch: list[int], mine: list[Future]) -> tuple:
            errors = [e for part in mine for e in part.result()]
            pixels = torch.from_numpy(self.ring[slot, : len(batch)])
            copy = torch.empty(pixels.shape, dtype=pixels.dtype, pin_memory=pin)
            copy.copy_(pixels)  # the slot is free again once this batch is taken
            return torch.tensor(batch), copy.permute(0, 3, 1, 2), errors

        def submit() -> Future | None:
            if (nxt := next(todo, None)) is None:
                return None
            k, batch = nxt
            slot = k % PREFETCH  # free: batch k - PREFETCH was taken (_in_order)
            rows = [(row, str(paths[i])) for row, i in enumerate(batch)]
            step = -(-len(rows) // self.processes)
            mine = [
                self.pool.submit(_decode_rows, slot, rows[j : j + step], preprocess, normalise)
                for j in range(0, len(rows), step)
            ]
            parts[:] = [f for f in parts if not f.done()] + mine
            return collector.submit(collect, slot, batch, mine)

        try:
            yield from _in_order(submit)
        except BrokenProcessPool as exc:  # the pool is unusable: the next extraction starts another
            self.broken = True
            raise VPRBenchError(
                "a loader process died while decoding images (killed, or out of memory?); "
                "--loader threads decodes in this process instead"
            ) from exc
        finally:  # also when the consumer stops early: nothing may still write into the ring
            for part in parts:
                part.cancel()
            wait_for(parts)
            collector.shutdown(wait=True, cancel_futures=True)


class SharedMemoryTooSmall(VPRBenchError):
    """/dev/shm cannot hold a loader's ring of batches."""


def _check_shared_memory(size: int, folder: str = "/dev/shm") -> None:
    """A clear error before a ring that does not fit (a container's default /dev/shm is 64 MiB):
    writing beyond a tmpfs's space kills the process with SIGBUS instead."""
    try:
        stats = os.statvfs(folder)
    except OSError:  # no such folder: not Linux; SharedMemory says what is wrong there
        return
    free = stats.f_bavail * stats.f_frsize
    if size > free:
        raise SharedMemoryTooSmall(
            f"--loader processes needs {size / 2**20:.0f} MiB of shared memory for its batches, "
            f"but {folder} has {free / 2**20:.0f} MiB free (in docker, raise --shm-size); use "
            "--loader threads or a smaller --batch-size"
        )


_DECODERS: OrderedDict[tuple, ProcessDecoders] = OrderedDict()
KEEP_DECODERS = 2  # pools kept running, the most recently used


def decoders(processes: int, shape: tuple[int, ...], dtype: str) -> ProcessDecoders:
    """The process pool for ``processes`` and a ring of ``shape`` and ``dtype``: one already running
    for them if any (start-up, about a second, is paid once per process), else a new one, the
    least recently used beyond ``KEEP_DECODERS`` closed. A pool that lost a process is replaced."""
    key = (processes, tuple(shape), np.dtype(dtype).str)
    if key in _DECODERS and _DECODERS[key].broken:
        _DECODERS.pop(key).close()
    if key in _DECODERS:
        _DECODERS.move_to_end(key)
        return _DECODERS[key]
    while len(_DECODERS) >= KEEP_DECODERS:
        _DECODERS.popitem(last=False)[1].close()
    _DECODERS[key] = ProcessDecoders(processes, shape, dtype)
    return _DECODERS[key]


@atexit.register
def close_decoders() -> None:
    while _DECODERS:
        _DECODERS.popitem()[1].close()


_RING: dict = {}  # in a decoder process: the shared memory and the ring array over it


def _attach_ring(name: str, shape: tuple[int, ...], dtype: str) -> None:
    memory = SharedMemory(name=name)
    _RING.update(memory=memory, ring=np.ndarray(shape, np.dtype(dtype), buffer=memory.buf))


def _decode_rows(slot: int, rows: list[tuple[int, str]], preprocess, normalise: bool) -> list[str]:
    """In a decoder process: each (row, path) into row ``row`` of ring slot ``slot``; the errors."""
    from vprbench.datasets.images import load_array

    ring, errors = _RING["ring"], []
    for row, path in rows:
        ring[slot, row], error = load_array(Path(path), preprocess, normalise)
        errors.append(error)
    return errors


def _pinned(x):
    import torch

    if isinstance(x, torch.Tensor):
        return x.pin_memory()
    if isinstance(x, list):
        return [_pinned(v) for v in x]
    return x


class InOrderCalls:
    """``fn(*args)`` for each ``put(*args)``, in order, in one background thread, with at most
    ``depth`` calls waiting: ``put`` blocks beyond that, so the caller never runs far ahead. Extraction
    hands it each batch's descriptors: fetching them (on CUDA, waiting for the forward pass) and
    writing the fsync'd shard then overlap the next batches instead of holding up the main thread.

    An exception in ``fn`` is raised by the next ``put`` or by ``close``; calls after it are dropped.
    Use as a context manager: leaving it waits for the calls already put, and an exception that
    ends the block is not masked by one from the thread."""

    _STOP = object()

    def __init__(self, fn: Callable, depth: int = 2, name: str = "vprbench-writer") -> None:
        self.fn = fn
        self._pending: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (args := self._pending.get()) is not self._STOP:
            if self._error is None:
                try:
                    self.fn(*args)
                except BaseException as exc:  # handed to the caller's thread
                    self._error = exc

    def put(self, *args) -> None:
        if self._error is not None:
            raise self._error
        self._pending.put(args)

    def close(self) -> None:
        """Wait for the calls already put; raise the first exception of any."""
        if self._thread.is_alive():
            self._pending.put(self._STOP)
            self._thread.join()
        if self._error is not None:
            raise self._error

    def __enter__(self) -> InOrderCalls:
        return self

    def __exit__(self, kind, value, traceback) -> None:
        if kind is None:
            self.close()
            return
        with contextlib.suppress(BaseException):  # already failing: finish the writes in flight,
            self.close()  # and keep the caller's exception
