"""Image preprocessing and the lists of images that feed extraction (map-style: item i of a list of
paths). Importing it imports neither torch nor torchvision: a warm evaluation never needs them."""

from __future__ import annotations

import functools
import io
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from vprbench.choices import INTERPOLATION_NAMES
from vprbench.datasets.resize import FLOAT_STAGES, resize_float, resize_uint8

INTERPOLATIONS = INTERPOLATION_NAMES  # torchvision's InterpolationMode of the same name
# PIL's filter of each: what torchvision's Resize applies to a PIL image
_PIL_FILTERS = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "nearest": Image.Resampling.NEAREST,
}


@dataclass(frozen=True)
class Preprocess:
    """Resize to (H, W) with ``interpolation`` at stage ``resize`` (vprbench.datasets.resize: PIL on
    the decoded image, torchvision on the uint8 tensor, on the [0, 1] tensor, or on the normalised
    tensor) with or without ``antialias``; scale to [0, 1]; normalise. ``image_size`` None: native
    resolution, no resize at all."""

    image_size: tuple[int, int] | None
    interpolation: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    resize: str = "pil"
    antialias: bool = True

    @property
    def float_resize(self) -> bool:
        """Whether the resize works on float values, so the loader must normalise (not the device)."""
        return self.resize in FLOAT_STAGES

    def pixels(self, image: Image.Image) -> np.ndarray:
        """An RGB image resized by PIL (what torchvision's Resize does to a PIL image): uint8 [H, W, 3]."""
        if self.image_size is None or image.size == tuple(reversed(self.image_size)):
            return np.array(image)  # PIL's resize to the same size is a copy
        h, w = self.image_size
        return np.array(image.resize((w, h), _PIL_FILTERS[self.interpolation]))  # writable

    def array(self, image: Image.Image, normalise: bool) -> np.ndarray:
        """An RGB image through this preprocessing: float32 [H, W, 3] normalised, or (``normalise``
        False, stages pil and uint8 only) the resized uint8 pixels for the device to normalise."""
        if self.resize == "pil":
            pixels = self.pixels(image)
        else:
            pixels = np.array(image)
            if self.resize == "uint8" and self.image_size is not None:
                pixels = resize_uint8(pixels, self.image_size, self.interpolation, self.antialias)
        if self.resize in ("pil", "uint8"):
            return normalise_pixels(pixels, self.table()) if normalise else pixels
        if self.resize == "normalised":  # ToTensor, Normalize, then resize
            values = normalise_pixels(pixels, self.table())
            return self._resized(values)
        # ToTensor, resize the [0, 1] values, then Normalize: float32 in that order
        values = self._resized(pixels.astype(np.float32) / np.float32(255))
        mean = np.asarray(self.mean, dtype=np.float32)
        std = np.asarray(self.std, dtype=np.float32)
        return (values - mean) / std

    def _resized(self, values: np.ndarray) -> np.ndarray:
        if self.image_size is None:
            return values
        return resize_float(values, self.image_size, self.interpolation, self.antialias)

    def table(self) -> np.ndarray:
        """float32 [3 * 256]: entry c * 256 + v is what ToTensor and Normalize make of value v in
        channel c, ((v / 255) - mean[c]) / std[c], computed in float32 in that order."""
        return _normalisation_table(tuple(self.mean), tuple(self.std))

    def as_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    def key(self) -> dict:
        """What the cache key holds: :meth:`as_dict`, less the stage and antialias of a PIL resize
        (always antialiased), so descriptors cached before stages existed, all PIL, stay valid."""
        out = self.as_dict()
        if self.resize == "pil":
            del out["resize"], out["antialias"]
        return out

    @classmethod
    def from_dict(cls, saved: dict) -> Preprocess:
        """The inverse of :meth:`as_dict` (a record written before ``resize`` existed: PIL)."""
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in saved.items()})

    def describe(self) -> str:
        """One line for a person: size, interpolation, where the resize happens, antialias."""
        if self.image_size is None:
            return "native resolution (no resize)"
        h, w = self.image_size
        where = RESIZE_WHERE[self.resize]
        aa = "antialiased" if self.antialias else "not antialiased"
        return f"{h}x{w}, {self.interpolation}, {where}, {aa}"


# Where each stage resizes, for a person (vprbench.datasets.resize)
RESIZE_WHERE = {
    "pil": "PIL on the decoded image",
    "uint8": "torchvision on the uint8 tensor",
    "unit": "on the [0, 1] tensor before Normalize",
    "normalised": "on the normalised tensor",
}


_CHANNEL_OFFSETS = np.array([0, 256, 512], dtype=np.uint16)


@functools.lru_cache(maxsize=16)
def _normalisation_table(mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    values = np.arange(256, dtype=np.float32) / np.float32(255)
    mean32 = np.asarray(mean, dtype=np.float32)[:, None]
    std32 = np.asarray(std, dtype=np.float32)[:, None]
    table = ((values[None, :] - mean32) / std32).reshape(-1)
    table.flags.writeable = False
    return table


def normalise_pixels(pixels: np.ndarray, table: np.ndarray) -> np.ndarray:
    """uint8 [..., 3] pixels -> float32 [..., 3] through ``table`` (:meth:`Preprocess.table`): the
    same float32 operations as computing each value, done once per possible value (1.4x as fast)."""
    return np.take(table, pixels + _CHANNEL_OFFSETS)


def normalise_batch(batch, table: np.ndarray):
    """A uint8 [B, 3, H, W] batch (channels last in memory, as :func:`collate_images` makes it) ->
    float32 [B, 3, H, W] (channels last) on the batch's device, through ``table``: bit for bit what
    the loader threads compute on the CPU, whatever the device. On CUDA the loader then ships a
    quarter of the bytes (stacked, pinned and copied) and leaves this arithmetic to the GPU."""
    import torch

    device = batch.device
    key = (table.tobytes(), str(device))
    if key not in _DEVICE_TABLES:
        _DEVICE_TABLES[key] = (
            torch.from_numpy(table.copy()).to(device),
            torch.from_numpy(_CHANNEL_OFFSETS.astype(np.int32)).to(device),
        )
    values, offsets = _DEVICE_TABLES[key]
    nhwc = batch.permute(0, 2, 3, 1)
    index = (nhwc.to(torch.int32) + offsets).reshape(-1)  # index_select takes int32 on any device
    return torch.index_select(values, 0, index).view(nhwc.shape).permute(0, 3, 1, 2)


_DEVICE_TABLES: dict = {}  # (table, device) -> (table, channel offsets) on that device


class ImageList:
    """Images by path, in list order. Item: (index, float32 tensor [3, H, W], error message or "").

    A file that cannot be read yields a zero tensor and its error, so the caller (in the main process,
    whatever the number of loader workers) decides between failing and skipping.
    """

    def __init__(self, paths: list[Path], preprocess: Preprocess, normalise: bool = True) -> None:
        self.paths = paths
        self.preprocess = preprocess
        # False: items are the resized uint8 pixels, [3, H, W] views of [H, W, 3] memory, for
        # normalise_batch on the extraction device
        self.normalise = normalise

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple:
        import torch

        pixels, error = load_array(self.paths[index], self.preprocess, self.normalise)
        return index, torch.from_numpy(pixels.transpose(2, 0, 1)), error


def load_array(path: Path, preprocess: Preprocess, normalise: bool) -> tuple[np.ndarray, str]:
    """One image as :class:`ImageList` makes it: ([H, W, 3] float32 normalised, or uint8 when not
    ``normalise``; "") or, for a file that cannot be read, (zeros, its error), through
    :meth:`Preprocess.array`. At stage "pil" it is bit for bit what torchvision's Resize on the PIL
    image, ToTensor and Normalize give (tests/test_loader.py); at the float stages, what
    ``transforms.functional.resize`` of the tensor gives, within float rounding (tests/test_resize.py).
    Only stage "uint8" uses torch (torchvision's uint8 kernel); the others are numpy and PIL, so loader
    threads decode side by side without contending for torch's intra-op thread pool, and loader
    processes import no torch."""
    try:
        with Image.open(path) as im:
            rgb = im.convert("RGB")
        return preprocess.array(rgb, normalise), ""
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        h, w = preprocess.image_size or (1, 1)  # native: a placeholder, never forwarded
        return np.zeros((h, w, 3), np.float32 if normalise else np.uint8), _unreadable(path, exc)


def collate_images(items: list[tuple]) -> tuple:
    """Batch of :class:`ImageList` items: (indices tensor, [B, 3, H, W] tensor, list of errors),
    stacked by numpy (not torch's thread pool: this runs in loader threads).

    The batch is channels last in memory (``torch.channels_last``; PIL's pixels already are):
    effnet-lite0's CPU forward pass ran 1.38x as fast on it as on NCHW, and d2vpr's as fast, with
    identical descriptors (``benchmarks/host_costs.py``). Every batch has this layout, whatever the
    items'."""
    import torch

    indices, tensors, errors = zip(*items, strict=True)
    c, h, w = tensors[0].shape
    stacked = np.empty((len(tensors), h, w, c), dtype=tensors[0].numpy().dtype)
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
    """Decode (JPEGs with torchvision: nvJPEG on CUDA) and resize a batch on ``device``.

    Stages pil and uint8: an antialiased (pil; uint8 as the card says) resize of the uint8 tensor,
    rounded back to uint8 (as PIL's is), for :func:`normalise_batch`. Stages unit and normalised:
    the values are normalised first (normalised) or scaled to [0, 1] (unit) on the device and the
    float tensor resized there, so the batch comes back normalised float32. Returns the [n, 3, H, W]
    batch, channels last as :func:`collate_images` makes it (zeros where unreadable), or, at native
    resolution, a list of [3, H, W] tensors; and the errors, with those found here."""
    import torch
    from torchvision.io import ImageReadMode, decode_jpeg

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
    floats = preprocess.float_resize
    dtype = torch.float32 if floats else torch.uint8
    images = {
        i: _resize_on_device(image.to(device, non_blocking=True), preprocess)
        for i, image in sorted(pixels.items())
        if not errors[i]
    }
    if preprocess.image_size is None:
        placeholder = torch.zeros(3, 1, 1, dtype=dtype, device=device)
        return [images.get(i, placeholder) for i in range(len(encoded))], errors
    h, w = preprocess.image_size
    out = torch.zeros(len(encoded), h, w, 3, dtype=dtype, device=device)
    for i, image in images.items():
        out[i] = image.permute(1, 2, 0)
    return out.permute(0, 3, 1, 2), errors


def _resize_on_device(image, preprocess: Preprocess):
    """One uint8 [3, H, W] image on its device through ``preprocess``'s resize stage."""
    import torch
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF

    # PIL's nearest samples the source pixel nearest each output pixel's centre, as tensors'
    # "nearest-exact" does (torch's "nearest" floors the scaled index instead); rounding still
    # picks another pixel for some outputs (about 9% at 640x480 -> 224x224), as the key records.
    name = preprocess.interpolation
    if preprocess.resize == "pil" and name == "nearest":
        name = "nearest-exact"
    mode = InterpolationMode(name)
    antialias = True if preprocess.resize == "pil" else preprocess.antialias
    size = preprocess.image_size

    def resized(x):
        return x if size is None else TF.resize(x, list(size), mode, antialias=antialias)

    if preprocess.resize == "uint8" and size is not None:  # the loader's kernel (resize_uint8)
        from torchvision.transforms.v2 import functional as F2

        return F2.resize(image, list(size), mode, antialias=antialias)
    if not preprocess.float_resize:
        return resized(image)
    table = preprocess.table()
    if preprocess.resize == "normalised":
        values = normalise_batch(image[None], table)[0]
        return resized(values.contiguous())
    mean = torch.tensor(preprocess.mean, dtype=torch.float32, device=image.device)[:, None, None]
    std = torch.tensor(preprocess.std, dtype=torch.float32, device=image.device)[:, None, None]
    return (resized(image.float() / 255) - mean) / std
