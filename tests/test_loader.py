"""The threaded batch loader and the numpy preprocessing it runs."""

import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vprbench.choices import IMAGENET_MEAN, IMAGENET_STD
from vprbench.datasets.images import ImageList, Preprocess, collate_images, normalise_batch
from vprbench.errors import VPRBenchError
from vprbench.extract import loader
from vprbench.extract.loader import (
    PREFETCH,
    InOrderCalls,
    ThreadedBatches,
    _check_shared_memory,
    close_decoders,
    decoders,
)


class Slow:
    """Items that take a varying time (later items sooner), recording the threads that made them."""

    def __init__(self, n):
        self.n, self.threads, self.made = n, set(), []

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        time.sleep(0.002 * ((self.n - i) % 5))
        self.threads.add(threading.get_ident())
        self.made.append(i)
        return i, torch.full((3, 1, 2), float(i)), ""


def test_batches_come_in_order_whatever_the_threads():
    batches = [[3, 1], [0], [7, 2, 5], [4, 6]]
    for threads in (0, 1, 3):
        items = Slow(8)
        got = list(ThreadedBatches(items, batches, threads, collate_images))
        assert [g[0].tolist() for g in got] == batches
        assert [g[1][:, 0, 0, 0].tolist() for g in got] == [[float(i) for i in b] for b in batches]
        assert (items.threads == {threading.get_ident()}) == (threads == 0)


def test_batches_are_channels_last_whatever_the_items_layout():
    rng = np.random.default_rng(0)
    planar = torch.from_numpy(rng.random((3, 4, 5), dtype=np.float32))  # NCHW-contiguous item
    pixels = rng.random((4, 5, 3), dtype=np.float32)
    interleaved = torch.from_numpy(pixels).permute(2, 0, 1)  # as load_array's pixels are
    indices, batch, errors = collate_images([(7, planar, ""), (2, interleaved, "bad")])
    assert batch.shape == (2, 3, 4, 5)
    assert batch.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(batch[0], planar) and torch.equal(batch[1], interleaved)
    assert indices.tolist() == [7, 2] and errors == ["", "bad"]


def test_stopping_early_prepares_no_more_than_the_prefetch():
    items = Slow(400)
    batches = [[i] for i in range(400)]
    loader = iter(ThreadedBatches(items, batches, 2, collate_images))
    next(loader)
    loader.close()  # as when extraction stops at a bad image
    assert len(items.made) <= 1 + PREFETCH + 1  # the batch taken, those in preparation, one more


def torchvision_reference(pre):
    """torchvision's Resize (antialiased), ToTensor, Normalize: the same steps in vprbench's order
    (the official D2-VPR/CricaVPR order is compared in the next test but one)."""
    from torchvision import transforms
    from torchvision.transforms import InterpolationMode

    return transforms.Compose([
        transforms.Resize(pre.image_size, InterpolationMode(pre.interpolation), antialias=True),
        transforms.ToTensor(),
        transforms.Normalize(pre.mean, pre.std),
    ])  # fmt: skip


def test_numpy_preprocessing_equals_torchvision_bit_for_bit(tmp_path):
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, size=(30, 40, 3), dtype=np.uint8)
    Image.fromarray(small).resize((640, 480), Image.BICUBIC).save(tmp_path / "a.jpg", quality=90)
    Image.fromarray(small).save(tmp_path / "b.png")
    for interpolation in ("bilinear", "bicubic", "nearest"):
        for size in ((224, 224), (480, 640), (31, 47)):
            pre = Preprocess(size, interpolation, IMAGENET_MEAN, IMAGENET_STD)
            for name in ("a.jpg", "b.png"):
                with Image.open(tmp_path / name) as im:
                    expected = torchvision_reference(pre)(im.convert("RGB"))
                got = ImageList([tmp_path / name], pre)[0][1]
                assert got.dtype == torch.float32 and torch.equal(got, expected), (name, size)
                # the uint8 pixels a CUDA extraction ships, normalised on the device: the same bits
                pixels = ImageList([tmp_path / name], pre, normalise=False)[0]
                batch = collate_images([pixels, pixels])[1]
                assert batch.dtype == torch.uint8
                on_device = normalise_batch(batch, pre.table())
                assert on_device.is_contiguous(memory_format=torch.channels_last)
                assert torch.equal(on_device[1], expected), (name, size)


def test_uint8_resizing_stays_within_a_grey_level_of_the_official_float_resize(tmp_path):
    """The official D2-VPR/CricaVPR evaluation (datasets_ws.py: base_transform, then
    transforms.functional.resize on the normalised tensor) against vprbench's resize of the uint8
    pixels before normalising: within one grey level everywhere, half of one on average."""
    from torchvision import transforms
    from torchvision.transforms import functional as TF

    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, size=(30, 40, 3), dtype=np.uint8)
    Image.fromarray(small).resize((640, 480), Image.BICUBIC).save(tmp_path / "a.jpg", quality=90)
    base_transform = transforms.Compose(
        [transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    )
    grey_level = 1 / 255 / min(IMAGENET_STD)  # one uint8 step, normalised
    for size in ((224, 224), (322, 322)):
        pre = Preprocess(size, "bilinear", IMAGENET_MEAN, IMAGENET_STD)
        ours = ImageList([tmp_path / "a.jpg"], pre)[0][1]
        with Image.open(tmp_path / "a.jpg") as im:
            official = TF.resize(base_transform(im.convert("RGB")), list(size), antialias=True)
        diff = (ours - official).abs()
        assert 0 < diff.max() <= grey_level and diff.mean() <= grey_level / 2, size


def test_a_failing_item_reaches_the_consumer():
    class Broken(Slow):
        def __getitem__(self, i):
            if i == 2:
                raise RuntimeError("item 2 failed")
            return super().__getitem__(i)

    with pytest.raises(RuntimeError, match="item 2 failed"):
        list(ThreadedBatches(Broken(4), [[0], [1], [2], [3]], 2, collate_images))


def test_in_order_calls_run_in_order_in_one_thread_and_hold_back_the_caller():
    done, threads, gate = [], set(), threading.Event()

    def write(i, value):
        gate.wait()
        threads.add(threading.get_ident())
        done.append((i, value))

    writer = InOrderCalls(write, depth=2)
    writer.put(0, "a")  # taken by the thread, which waits at the gate
    time.sleep(0.05)
    writer.put(1, "b")
    writer.put(2, "c")  # two waiting: the depth
    blocked = threading.Thread(target=writer.put, args=(3, "d"))
    blocked.start()
    blocked.join(0.2)
    assert blocked.is_alive()  # a third waiting call is refused until the thread catches up
    gate.set()
    blocked.join(5)
    writer.close()
    assert done == [(0, "a"), (1, "b"), (2, "c"), (3, "d")]
    assert len(threads) == 1 and threading.get_ident() not in threads


def test_in_order_calls_hand_the_threads_exception_to_the_caller():
    calls = []

    def write(i):
        calls.append(i)
        if i == 1:
            raise OSError("disk full")

    writer = InOrderCalls(write, depth=1)
    writer.put(0)
    writer.put(1)
    with pytest.raises(OSError, match="disk full"):
        for i in range(2, 100):  # a later put raises it: the caller stops early
            writer.put(i)
            time.sleep(0.01)
    with pytest.raises(OSError, match="disk full"):
        writer.close()
    assert calls == [0, 1]  # nothing is written after the failure


def test_leaving_in_order_calls_on_an_error_finishes_the_writes_and_keeps_that_error():
    done = []

    def write(i):
        time.sleep(0.02)
        if i == 2:
            raise OSError("from the thread")
        done.append(i)

    with pytest.raises(ValueError, match="from the caller"), InOrderCalls(write, depth=3) as w:
        w.put(0)
        w.put(1)
        w.put(2)
        raise ValueError("from the caller")
    assert done == [0, 1]  # the batches already handed over were written before leaving


def jpeg_folder(folder, n):
    rng = np.random.default_rng(1)
    folder.mkdir()
    for i in range(n):
        small = rng.integers(0, 256, size=(6, 8, 3), dtype=np.uint8)
        Image.fromarray(small).resize((80, 60), Image.BICUBIC).save(folder / f"{i}.jpg", quality=90)
    return sorted(folder.glob("*.jpg"), key=lambda p: int(p.stem))


def test_loader_processes_make_the_threads_batches_and_stop_cleanly(tmp_path):
    paths = jpeg_folder(tmp_path / "images", 11)
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    paths[4] = tmp_path / "bad.jpg"
    pre = Preprocess((20, 24), "bilinear", IMAGENET_MEAN, IMAGENET_STD)
    batches = [[3, 1, 9], [0], [7, 2, 5, 4], [10, 6, 8]]  # any order, sizes up to 4
    pools = []
    try:
        for normalise, dtype in ((True, "float32"), (False, "uint8")):
            pool = decoders(2, (PREFETCH, 4, 20, 24, 3), dtype)
            threads = list(ThreadedBatches(ImageList(paths, pre, normalise), batches, 2,
                                           collate_images))  # fmt: skip
            for _ in range(2):  # the pool serves extraction after extraction
                got = list(pool.batches(paths, batches, pre, normalise))
                assert len(got) == len(threads) == 4
                for (i, x, e), (j, y, f) in zip(got, threads, strict=True):
                    assert torch.equal(i, j) and e == f
                    assert x.dtype == y.dtype and torch.equal(x, y)  # the same bits
                    assert x.is_contiguous(memory_format=torch.channels_last)
            assert got[2][2][3].endswith("bad.jpg: cannot read image (not a decodable image)")
            assert decoders(2, (PREFETCH, 4, 20, 24, 3), dtype) is pool  # not started again
            assert decoders(1, (PREFETCH, 4, 20, 24, 3), dtype) is not pool
            # a consumer that stops early (a bad image under --on-bad-image error) leaves no image
            # still being written into the ring: the next batches are right
            ready = pool.batches(paths, batches * 20, pre, normalise)
            next(ready)
            ready.close()
            again = list(pool.batches(paths, batches, pre, normalise))
            assert all(torch.equal(a[1], b[1]) for a, b in zip(again, threads, strict=True))
            pools.append(pool)
        # two pools kept: the float32 ones were closed for the uint8 ones, their memory freed
        assert [key[0] for key in loader._DECODERS] == [2, 1] and pools[
            1
        ] in loader._DECODERS.values()
        assert not Path(f"/dev/shm/{pools[0]._memory.name}").exists()
    finally:
        close_decoders()


def test_loader_processes_say_when_shared_memory_is_too_small():
    with pytest.raises(VPRBenchError, match=r"needs \d+ MiB of shared memory .* /dev/shm has"):
        _check_shared_memory(2**60)


def test_a_killed_loader_process_is_a_clear_error_and_the_next_pool_works(tmp_path):
    import os
    import signal

    paths = jpeg_folder(tmp_path / "images", 4)
    pre = Preprocess((20, 24), "bilinear", IMAGENET_MEAN, IMAGENET_STD)
    batches = [[i % 4] for i in range(400)]
    shape = (PREFETCH, 1, 20, 24, 3)
    try:
        pool = decoders(2, shape, "uint8")
        ready = pool.batches(paths, batches, pre, False)
        next(ready)
        os.kill(next(iter(pool.pool._processes)), signal.SIGKILL)  # as the OOM killer would
        with pytest.raises(VPRBenchError, match="a loader process died while decoding"):
            list(ready)
        fresh = decoders(2, shape, "uint8")
        assert fresh is not pool and not fresh.broken
        expected = list(
            ThreadedBatches(ImageList(paths, pre, False), batches[:4], 0, collate_images)
        )
        got = list(fresh.batches(paths, batches[:4], pre, False))
        assert all(torch.equal(a[1], b[1]) for a, b in zip(got, expected, strict=True))
    finally:
        close_decoders()
