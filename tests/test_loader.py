"""The threaded batch loader and the numpy preprocessing it runs."""

import threading
import time

import numpy as np
import pytest
import torch
from PIL import Image

from vprbench.choices import IMAGENET_MEAN, IMAGENET_STD
from vprbench.datasets.images import ImageList, Preprocess, collate_images
from vprbench.loader import PREFETCH, ThreadedBatches


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
        return i, torch.full((2,), float(i)), ""


def test_batches_come_in_order_whatever_the_threads():
    batches = [[3, 1], [0], [7, 2, 5], [4, 6]]
    for threads in (0, 1, 3):
        items = Slow(8)
        got = list(ThreadedBatches(items, batches, threads, collate_images))
        assert [g[0].tolist() for g in got] == batches
        assert [g[1][:, 0].tolist() for g in got] == [[float(i) for i in b] for b in batches]
        assert (items.threads == {threading.get_ident()}) == (threads == 0)


def test_stopping_early_prepares_no_more_than_the_prefetch():
    items = Slow(400)
    batches = [[i] for i in range(400)]
    loader = iter(ThreadedBatches(items, batches, 2, collate_images))
    next(loader)
    loader.close()  # as when extraction stops at a bad image
    assert len(items.made) <= 1 + PREFETCH + 1  # the batch taken, those in preparation, one more


def torchvision_reference(pre):
    """The usual torchvision evaluation transform of the official codes: Resize (antialiased),
    ToTensor, Normalize."""
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


def test_a_failing_item_reaches_the_consumer():
    class Broken(Slow):
        def __getitem__(self, i):
            if i == 2:
                raise RuntimeError("item 2 failed")
            return super().__getitem__(i)

    with pytest.raises(RuntimeError, match="item 2 failed"):
        list(ThreadedBatches(Broken(4), [[0], [1], [2], [3]], 2, collate_images))
