"""Image preprocessing and the lists of images that feed extraction (map-style: item i of a list of
paths). Importing it imports neither torch nor torchvision: a warm evaluation never needs them."""

from __future__ import annotations

import io
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from vprbench.choices import INTERPOLATION_NAMES

INTERPOLATIONS = INTERPOLATION_NAMES  # torchvision's InterpolationMode of the same name
# PIL's filter of each: what torchvision's Resize applies to a PIL image
_PIL_FILTERS = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "nearest": Image.Resampling.NEAREST,
}


@dataclass(frozen=True)
class Preprocess:
    """Resize to (H, W) with ``interpolation`` (antialiased), scale to [0, 1], normalise."""

    image_size: tuple[int, int]
    interpolation: str
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def apply(self, image: Image.Image) -> np.ndarray:
        """An RGB image as a float32 [3, H, W] array, bit for bit what torchvision's Resize
        (antialiased), ToTensor and Normalize give (tests/test_loader.py): PIL resizes, numpy scales
        and normalises in float32 in the same order. Neither uses torch's intra-op thread pool, so
        loader threads decode side by side without contending for it."""
        h, w = self.image_size
        pixels = np.asarray(image.resize((w, h), _PIL_FILTERS[self.interpolation]))
        x = pixels.transpose(2, 0, 1).astype(np.float32) / np.float32(255)
        mean = np.asarray(self.mean, dtype=np.float32)[:, None, None]
        std = np.asarray(self.std, dtype=np.float32)[:, None, None]
        return (x - mean) / std

    def as_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


class ImageList:
    """Images by path, in list order. Item: (index, float32 tensor [3, H, W], error message or "").

    A file that cannot be read yields a zero tensor and its error, so the caller (in the main process,
    whatever the number of loader workers) decides between failing and skipping.
    """

    def __init__(self, paths: list[Path], preprocess: Preprocess) -> None:
        self.paths = paths
        self.preprocess = preprocess

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple:
        import torch

        path = self.paths[index]
        try:
            with Image.open(path) as im:
                pixels = self.preprocess.apply(im.convert("RGB"))
            return index, torch.from_numpy(pixels), ""
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            h, w = self.preprocess.image_size
            return index, torch.zeros(3, h, w), _unreadable(path, exc)


def collate_images(items: list[tuple]) -> tuple:
    """Batch of :class:`ImageList` items: (indices tensor, [B, 3, H, W] tensor, list of errors),
    stacked by numpy (not torch's thread pool: this runs in loader threads).

    The batch is channels last in memory (``torch.channels_last``; PIL's pixels already are): a CPU
    convolution runs 1.3x as fast on it as on NCHW (effnet-lite0, batch 32; descriptors within 3e-7),
    and a ViT's patch embedding no slower. Every batch has this layout, whatever the items'."""
    import torch

    indices, tensors, errors = zip(*items, strict=True)
    c, h, w = tensors[0].shape
    stacked = np.empty((len(tensors), h, w, c), dtype=np.float32)
    for row, t in zip(stacked, tensors, strict=True):
        row[...] = t.numpy().transpose(1, 2, 0)
    return torch.tensor(indices), torch.from_numpy(stacked).permute(0, 3, 1, 2), list(errors)


def _unreadable(path: Path, exc: Exception) -> str:
    reason = getattr(exc, "strerror", None) or "not a decodable image"
    return f"{path}: cannot read image ({reason})"


class EncodedImageList:
    """Images by path for decoding on the extraction device (``--decode device``). Item: (index,
    uint8 tensor, error message or ""): a JPEG as its file's bytes (1-D), to be decoded by
    :func:`decode_on_device`; any other format decoded here by PIL to [3, H, W] uint8."""

    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple:
        import torch

        path = self.paths[index]
        try:
            data = path.read_bytes()
            if data[:3] == b"\xff\xd8\xff":  # JPEG's start-of-image marker
                return index, torch.frombuffer(bytearray(data), dtype=torch.uint8), ""
            with Image.open(io.BytesIO(data)) as im:
                pixels = np.array(im.convert("RGB"))
            return index, torch.from_numpy(pixels).permute(2, 0, 1).contiguous(), ""
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            return index, torch.zeros(0, dtype=torch.uint8), _unreadable(path, exc)


def collate_encoded(items: list[tuple]) -> tuple:
    """Batch of :class:`EncodedImageList` items: (indices tensor, list of tensors, list of errors)."""
    import torch

    indices, tensors, errors = zip(*items, strict=True)
    return torch.tensor(indices), list(tensors), list(errors)


def decode_on_device(encoded: list, errors: list, preprocess: Preprocess, paths: list, device):
    """Decode (JPEGs with torchvision: nvJPEG on CUDA), resize and normalise a batch on ``device``.

    The steps are those of :meth:`Preprocess.apply` on a uint8 tensor: an antialiased resize
    rounded back to uint8 (as PIL's is), then scaling to [0, 1] and normalisation. Returns the
    [n, 3, H, W] float tensor (zeros where unreadable) and the errors, with those found here."""
    import torch
    from torchvision.io import ImageReadMode, decode_jpeg
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF

    errors = list(errors)
    jpegs = [i for i, t in enumerate(encoded) if not errors[i] and t.dim() == 1]
    # decoded already (not JPEG) or to be decoded here; unreadable ones stay out
    pixels = {i: t for i, t in enumerate(encoded) if not errors[i] and t.dim() == 3}
    with warnings.catch_warnings():
        # torchvision 0.29 deprecates its image codecs in favour of TorchCodec's; they still work.
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="torchvision")
        if jpegs and torch.device(device).type == "cuda":
            # nvJPEG's hardware decoder writes its outputs before work already queued on the stream
            # has run, so it can overwrite blocks that queued kernels (the previous batch's forward
            # pass) still read: drain the stream first (pytorch/vision#9606, torchcodec#1634). Seen
            # here on an H100 before this line: cricavpr's descriptors at cosine 0.61 of PIL's.
            torch.cuda.current_stream(device).synchronize()
        try:
            if jpegs:
                batch = [encoded[i] for i in jpegs]
                decoded = decode_jpeg(batch, mode=ImageReadMode.RGB, device=device)
                pixels.update(zip(jpegs, decoded, strict=True))
        except RuntimeError:  # one bad file fails the batch: find it
            for i in jpegs:
                try:
                    pixels[i] = decode_jpeg(encoded[i], mode=ImageReadMode.RGB, device=device)
                except RuntimeError as exc:
                    errors[i] = _unreadable(paths[i], exc)
    h, w = preprocess.image_size
    out = torch.zeros(len(encoded), 3, h, w, device=device)
    # PIL's nearest samples the source pixel nearest each output pixel's centre, as tensors'
    # "nearest-exact" does (torch's "nearest" floors the scaled index instead); rounding still
    # picks another pixel for some outputs (about 9% at 640x480 -> 224x224), as the key records.
    mode = InterpolationMode(
        "nearest-exact" if preprocess.interpolation == "nearest" else preprocess.interpolation
    )
    for i, image in sorted(pixels.items()):
        if errors[i]:
            continue
        image = TF.resize(image.to(device, non_blocking=True), [h, w], mode, antialias=True)
        out[i] = TF.normalize(image.float().div_(255), preprocess.mean, preprocess.std)
    return out, errors
