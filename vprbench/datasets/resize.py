"""Where and how an image is resized: the official evaluation scripts disagree, and the difference
moves descriptors (a trained network's reach cosine 0.94-0.96 of each other between PIL's antialiased
resize and an unantialiased resize of the normalised tensor).

The four stages (``Preprocess.resize``; the card of each model names its official one):

    pil         PIL resizes the decoded image (torchvision ``Resize`` on a PIL image); PIL always
                antialiases, so ``antialias`` must be True
    uint8       torchvision resizes the uint8 tensor, rounded back to uint8 (``decode_image`` then
                ``v2.Resize``: Bag-of-Queries' validation)
    unit        ``ToTensor`` first, then the [0, 1] float tensor is resized, then ``Normalize``
    normalised  ``ToTensor`` and ``Normalize`` first, then the normalised float tensor is resized
                (``base_transform`` then ``transforms.functional.resize``: Lu-Feng's
                ``datasets_ws.py``, tony19980810/D2VPR's)

The float stages are computed here in numpy, tap by tap, with the sampling positions and filter
weights of torch's ``interpolate`` (``aten/src/ATen/native/UpSample.h`` and ``UpSampleKernel.cpp``:
``area_pixel_compute_source_index``, ``_compute_index_ranges_weights``): the same values within float
rounding (tests/test_resize.py compares them with torchvision's calls), in loader threads or processes
without torch's thread pool. The uint8 stage calls torchvision itself, whose fixed-point uint8 kernel
is what the official code ran.
"""

from __future__ import annotations

import functools

import numpy as np

from vprbench.choices import RESIZE_STAGES

FLOAT_STAGES = ("unit", "normalised")
_CUBIC_A = -0.75  # torch's bicubic without antialias (UpSample.h get_cubic_upsample_coefficients)
_CUBIC_A_AA = -0.5  # with antialias, as PIL (UpSampleKernel.cpp HelperInterpCubic::aa_filter)


def check_stage(resize: str, interpolation: str, antialias: bool) -> None:
    """A clear error for a combination that no official pipeline (nor torchvision) can run."""
    from vprbench.errors import VPRBenchError

    if resize not in RESIZE_STAGES:
        raise VPRBenchError(f"--resize must be one of {list(RESIZE_STAGES)}, got {resize!r}")
    if resize == "pil" and not antialias:
        raise VPRBenchError(
            "--no-antialias needs a tensor resize (--resize uint8, unit or normalised): PIL "
            "always antialiases"
        )


@functools.lru_cache(maxsize=64)
def taps(in_size: int, out_size: int, interpolation: str, antialias: bool):
    """(indices int64 [out, T], weights float32 [out, T]) along one axis: output pixel i is
    ``sum_t weights[i, t] * input[indices[i, t]]``, as torch's ``interpolate`` with
    ``align_corners=False`` computes it. Padding taps have weight 0."""
    out = np.arange(out_size)
    scale = np.float32(in_size) / np.float32(out_size)  # area_pixel_compute_scale, float
    if interpolation == "nearest":  # nearest_idx: floorf(i * scale), not past the last pixel
        if out_size == in_size:
            index = out
        else:
            index = np.minimum(np.floor(out.astype(np.float32) * scale), in_size - 1)
        return index.astype(np.int64)[:, None], np.ones((out_size, 1), np.float32)
    if antialias and interpolation in ("bilinear", "bicubic"):
        return _antialias_taps(in_size, out_size, interpolation)
    # area_pixel_compute_source_index: scale * (i + 0.5) - 0.5, clamped at 0 for linear only; the
    # compiler fuses it into one multiply-add, rounded once (float64 holds the product exactly)
    src = (np.float64(scale) * (out + 0.5) - 0.5).astype(np.float32)
    if interpolation == "bilinear":
        src = np.maximum(src, np.float32(0))
        first = src.astype(np.int64)  # non-negative: truncation is floor
        lam = np.clip(src - first.astype(np.float32), 0, 1).astype(np.float32)
        second = first + (first < in_size - 1)
        return np.stack([first, second], 1), np.stack([np.float32(1) - lam, lam], 1)
    if interpolation == "bicubic":
        # guard_index_and_lambda: the index at most the last pixel, the fraction within [0, 1]
        first = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
        t = np.clip(src - first.astype(np.float32), 0, 1).astype(np.float32)
        a = np.float32(_CUBIC_A)
        weights = np.stack(
            [_cubic_far(t + 1, a), _cubic_near(t, a), _cubic_near(1 - t, a), _cubic_far(2 - t, a)],
            1,
        ).astype(np.float32)
        index = np.clip(first[:, None] + np.arange(-1, 3)[None, :], 0, in_size - 1)
        return index, weights
    raise ValueError(f"unknown interpolation {interpolation!r}")


def _cubic_near(x, a):  # |x| <= 1: cubic_convolution1
    return ((a + 2) * x - (a + 3)) * x * x + 1


def _cubic_far(x, a):  # 1 < |x| < 2: cubic_convolution2
    return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a


def _antialias_taps(in_size: int, out_size: int, interpolation: str):
    """_compute_index_ranges_weights: a filter stretched by the scale when downscaling, its weights
    normalised to sum 1 for each output pixel, in float32 as torch computes them for float input."""
    f32 = np.float32
    scale = f32(in_size) / f32(out_size)
    half = f32(1.0 if interpolation == "bilinear" else 2.0)  # interp_size / 2
    support = half * scale if scale >= 1.0 else half
    invscale = f32(1.0) / scale if scale >= 1.0 else f32(1.0)
    rows = []
    for i in range(out_size):
        center = scale * f32(i + 0.5)
        xmin = max(int(center - support + f32(0.5)), 0)
        xsize = min(int(center + support + f32(0.5)), in_size) - xmin
        x = np.abs((np.arange(xsize, dtype=f32) + f32(xmin) - center + f32(0.5)) * invscale)
        if interpolation == "bilinear":
            w = np.where(x < 1, f32(1) - x, f32(0))
        else:
            a = f32(_CUBIC_A_AA)
            w = np.where(
                x < 1,
                ((a + 2) * x - (a + 3)) * x * x + 1,
                np.where(x < 2, (((x - 5) * x + 8) * x - 4) * a, f32(0)),
            ).astype(f32)
        total = f32(0)
        for value in w:  # summed in order, as the C++ loop does
            total = f32(total + value)
        rows.append((xmin, w / total if total != 0 else w))
    width = max(len(w) for _, w in rows)
    index = np.zeros((out_size, width), np.int64)
    weights = np.zeros((out_size, width), np.float32)
    for i, (xmin, w) in enumerate(rows):
        index[i, : len(w)] = np.arange(xmin, xmin + len(w))
        index[i, len(w) :] = xmin
        weights[i, : len(w)] = w
    return index, weights


def resize_float(x: np.ndarray, size: tuple[int, int], interpolation: str, antialias: bool):
    """float32 [H, W, C] -> float32 [h, w, C], as ``torchvision.transforms.functional.resize`` of the
    [C, H, W] tensor with ``antialias``: the width first, then the height (torch's separable order)."""
    h, w = size
    if x.shape[1] != w:
        index, weights = taps(x.shape[1], w, interpolation, antialias)
        x = _apply(x, index, weights, axis=1)
    if x.shape[0] != h:
        index, weights = taps(x.shape[0], h, interpolation, antialias)
        x = _apply(x, index, weights, axis=0)
    return np.ascontiguousarray(x, dtype=np.float32)


def _apply(x: np.ndarray, index: np.ndarray, weights: np.ndarray, axis: int) -> np.ndarray:
    shape = [1, 1, 1]
    shape[axis] = -1
    out = np.take(x, index[:, 0], axis=axis) * weights[:, 0].reshape(shape)
    for t in range(1, index.shape[1]):
        out += np.take(x, index[:, t], axis=axis) * weights[:, t].reshape(shape)
    return out


def resize_uint8(pixels: np.ndarray, size: tuple[int, int], interpolation: str, antialias: bool):
    """uint8 [H, W, 3] -> uint8 [h, w, 3] through ``torchvision.transforms.v2.functional.resize`` of
    the uint8 [3, H, W] tensor (what ``v2.Resize`` does after ``decode_image``)."""
    import torch
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.v2 import functional as F2

    _one_torch_thread()
    tensor = torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1)
    out = F2.resize(tensor, list(size), InterpolationMode(interpolation), antialias=antialias)
    return np.ascontiguousarray(out.permute(1, 2, 0).numpy())


def _one_torch_thread() -> None:
    """A loader process (spawned, one of many) runs torch on one thread."""
    import multiprocessing

    if multiprocessing.parent_process() is not None and not _STATE.get("threads"):
        import torch

        torch.set_num_threads(1)
        _STATE["threads"] = 1


_STATE: dict = {}
