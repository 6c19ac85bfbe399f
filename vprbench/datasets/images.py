"""Image preprocessing and the list of images that feeds extraction (a map-style dataset for torch's
DataLoader). Importing it imports neither torch nor torchvision: a warm evaluation never needs them."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from vprbench.choices import INTERPOLATION_NAMES

INTERPOLATIONS = INTERPOLATION_NAMES  # torchvision's InterpolationMode of the same name


@dataclass(frozen=True)
class Preprocess:
    """Resize to (H, W) with ``interpolation`` (antialiased), scale to [0, 1], normalise."""

    image_size: tuple[int, int]
    interpolation: str
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def transform(self):
        """The torchvision transform: Resize (antialiased), ToTensor, Normalize."""
        from torchvision import transforms
        from torchvision.transforms import InterpolationMode

        return transforms.Compose(
            [
                transforms.Resize(
                    tuple(self.image_size),
                    interpolation=InterpolationMode(self.interpolation),
                    antialias=True,
                ),
                transforms.ToTensor(),
                transforms.Normalize(self.mean, self.std),
            ]
        )

    def as_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


class ImageList:
    """Images by path, in list order. Item: (index, tensor [3, H, W], error message or "").

    A file that cannot be read yields a zero tensor and its error, so the caller (in the main process,
    whatever the number of loader workers) decides between failing and skipping.
    """

    def __init__(self, paths: list[Path], preprocess: Preprocess) -> None:
        self.paths = paths
        self.preprocess = preprocess
        self._transform = preprocess.transform()

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple:
        path = self.paths[index]
        try:
            with Image.open(path) as im:
                tensor = self._transform(im.convert("RGB"))
            return index, tensor, ""
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            h, w = self.preprocess.image_size
            reason = getattr(exc, "strerror", None) or "not a decodable image"
            import torch

            return index, torch.zeros(3, h, w), f"{path}: cannot read image ({reason})"
