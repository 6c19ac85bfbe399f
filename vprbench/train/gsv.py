"""GSV-Cities training data: the folder layout, places of K images, a P x K batch sampler, augmentation.

    GSV_ROOT/Dataframes/<city>.csv   columns place_id, year, month, northdeg, city_id, lat, lon, panoid
    GSV_ROOT/Images/<city>/<city>_<place_id:07d>_<year:04d>_<month:02d>_<northdeg:03d>_<lat>_<lon>_<panoid>.jpg

The image name is gsv-cities' own (amaralibey/gsv-cities dataloaders/GSVCitiesDataset.py get_img_name).
Places with fewer than K images are dropped and counted; place ids are made unique across cities.

Every random choice is a pure function of (seed, epoch, batch, position): which places form a batch,
which K images of a place, and the augmentation of each image. A resumed run therefore draws exactly what
an uninterrupted one would, whatever the number of loader workers or processes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from vprbench.errors import VPRBenchError

COLUMNS = ("place_id", "year", "month", "northdeg", "city_id", "lat", "lon", "panoid")
# The cities the released distillation reads, in its order (D2VPR dataloaders/GSVCities.py:9-33, the
# TRAIN_CITIES of amaralibey/gsv-cities); the released fine-tuning reads every Dataframes/*.csv
# (src/dataloaders/gsv_cities.py:144-146, cities="all"). OSL, TRT, PRG and PRS are Oslo, Toronto,
# Prague and Paris.
RELEASED_DISTILL_CITIES = (
    "Bangkok", "BuenosAires", "LosAngeles", "MexicoCity", "OSL", "Rome", "Barcelona", "Chicago",
    "Madrid", "Miami", "Phoenix", "TRT", "Boston", "Lisbon", "Medellin", "Minneapolis", "PRG",
    "WashingtonDC", "Brussels", "London", "Melbourne", "Osaka", "PRS",
)  # fmt: skip
EMBEDDED = "nordland-train-sample"
TRAINING_SETS = {
    "gsv-cities": (
        "GSV-Cities (Ali-bey et al., Neurocomputing 2022): 62k places, 530k Street View images of "
        "cities worldwide, the training set of D²-VPR, CricaVPR, MixVPR, BoQ, SALAD. Not redistributable here: "
        "download it from Kaggle (amaralibey/gsv-cities) and pass its folder as --data GSV_ROOT "
        "(it must hold Dataframes/<city>.csv and Images/<city>/)."
    ),
    EMBEDDED: (
        "Embedded in vprbench: 200 places of Nordland (summer and winter frames f-1, f, f+1; NRK, "
        "CC BY 3.0) in GSV-Cities layout, none within 20 frames of nordland-sample. "
        "Pass --data nordland-train-sample."
    ),
}


def embedded_train_sample() -> Path:
    """Folder of the embedded nordland-train-sample (GSV-Cities layout)."""
    return Path(str(resources.files("vprbench") / "data" / "nordland_train_sample"))


def resolve_data_root(data: str | Path) -> Path:
    """``--data``: a folder, or the name of the embedded training set."""
    return embedded_train_sample() if str(data) == EMBEDDED else Path(data)


def image_name(row) -> str:
    """gsv-cities' file name of a dataframe row (get_img_name)."""
    return (
        f"{row.city_id}_{int(row.place_id):07d}_{int(row.year):04d}_{int(row.month):02d}_"
        f"{int(row.northdeg):03d}_{row.lat}_{row.lon}_{row.panoid}.jpg"
    )


@dataclass
class GSVPlaces:
    """The usable places of a GSV-Cities folder: ``places[i]`` lists image paths relative to ``root``."""

    root: Path
    cities: list[str]
    places: list[list[str]]
    place_ids: list[str]  # "<city>/<place_id>", unique across cities
    dropped: int  # places with fewer than ``min_images`` images

    @property
    def city_of_place(self) -> list[int]:
        """The index in ``cities`` of each place's city (the in-city batch orders group by it)."""
        index = {city: i for i, city in enumerate(self.cities)}
        return [index[pid.rsplit("/", 1)[0]] for pid in self.place_ids]

    @property
    def num_images(self) -> int:
        return sum(len(p) for p in self.places)


def read_gsv_places(
    root: str | Path,
    cities: list[str] | None = None,
    min_images: int = 4,
    check_images: bool = True,
) -> GSVPlaces:
    """Read the places of ``cities`` (default: every ``Dataframes/*.csv``) that have at least
    ``min_images`` images. Errors name the file or city at fault: a missing folder, csv, column or
    image, or a city with no usable place."""
    import pandas as pd

    root = resolve_data_root(root)
    frames = root / "Dataframes"
    if not frames.is_dir():
        raise VPRBenchError(
            f"{root}: not a GSV-Cities folder (no Dataframes/; expected Dataframes/<city>.csv and Images/<city>/)"
        )
    available = sorted(p.stem for p in frames.glob("*.csv"))
    cities = list(cities) if cities else available
    if not cities:
        raise VPRBenchError(f"{frames}: no <city>.csv files")
    missing = [c for c in cities if c not in available]
    if missing:
        raise VPRBenchError(f"{frames}: no csv for cities {missing}; available: {available}")
    places, place_ids, dropped = [], [], 0
    for city in cities:
        path = frames / f"{city}.csv"
        try:
            df = pd.read_csv(path)
        except (OSError, ValueError) as exc:
            raise VPRBenchError(f"{path}: not a readable csv ({exc})") from exc
        absent = [c for c in COLUMNS if c not in df.columns]
        if absent:
            raise VPRBenchError(f"{path}: missing column(s) {absent}; expected {list(COLUMNS)}")
        usable = 0
        for place_id, group in df.groupby("place_id", sort=True):
            if len(group) < min_images:
                dropped += 1
                continue
            names = sorted(f"Images/{city}/{image_name(row)}" for row in group.itertuples())
            places.append(names)
            place_ids.append(f"{city}/{place_id}")
            usable += 1
        if usable == 0:
            raise VPRBenchError(
                f"{path}: no place with at least {min_images} images (--images-per-place)"
            )
    result = GSVPlaces(root, cities, places, place_ids, dropped)
    if check_images:
        absent = [p for place in places for p in place if not (root / p).is_file()]
        if absent:
            raise VPRBenchError(
                f"{root}: {len(absent)} image(s) listed in Dataframes/ are missing, e.g. {absent[0]}"
            )
    return result


def _seed(*parts: int) -> int:
    """A 63-bit seed from integers (stable across processes and Python versions)."""
    digest = hashlib.sha256(",".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


# Which places share a batch (--batching):
#   in-city        each city's places shuffled on their own (a new order every epoch), the cities
#                  concatenated in their listed order, P consecutive places per batch: nearly every
#                  batch is one city, so the miner's negatives are same-city ones (GSV-Cities'
#                  shuffle_all=False; D2VPR finetune_script.py:106-109 re-shuffles in-city each epoch)
#   in-city-fixed  the same, one order for every epoch: the released distillation builds its dataset
#                  once (D2VPR dataloaders/train/GSVCitiesDataset.py:59-83, distillation.py:93-101
#                  shuffle False), so its batches repeat; only the K images and augmentation change
#   global         one permutation of all places every epoch (vprbench before in-city batches): batches
#                  mix cities
# In both in-city orders a city's places come in the order they first appear among its shuffled
# images, as pd.unique over the shuffled dataframe gives them (a place with more images tends to
# come earlier), not a uniform permutation.
BATCHINGS = ("in-city", "in-city-fixed", "global")


class PlaceBatchSampler:
    """P places x K images per batch; one epoch is every place once (the last partial batch dropped).

    Yields lists of (place, image, augmentation seed) for this rank: with ``world_size`` W, rank r gets
    places [r*P/W, (r+1)*P/W) of each global batch, so the W ranks together see exactly the batch a
    single process would. ``start_batch`` skips batches already done (resume). ``batching``: which
    places share a batch (BATCHINGS); the in-city ones need ``cities``, each place's city index."""

    def __init__(
        self,
        places: list[list[str]],
        places_per_batch: int,
        images_per_place: int,
        seed: int,
        epoch: int = 0,
        start_batch: int = 0,
        rank: int = 0,
        world_size: int = 1,
        cities: list[int] | None = None,
        batching: str = "global",
    ) -> None:
        if batching not in BATCHINGS:
            raise VPRBenchError(f"--batching must be one of {list(BATCHINGS)}, got {batching!r}")
        if batching != "global" and (cities is None or len(cities) != len(places)):
            raise VPRBenchError(f"--batching {batching} needs the city of every place")
        if places_per_batch < 2:
            raise VPRBenchError("--places-per-batch must be at least 2 (a batch needs negatives)")
        if places_per_batch % world_size:
            raise VPRBenchError(
                f"--places-per-batch {places_per_batch} must be a multiple of the {world_size} processes"
            )
        short = [i for i, p in enumerate(places) if len(p) < images_per_place]
        if short:
            raise VPRBenchError(
                f"--images-per-place {images_per_place}: {len(short)} place(s) have fewer images"
            )
        if len(places) < places_per_batch:
            raise VPRBenchError(
                f"--places-per-batch {places_per_batch} exceeds the {len(places)} usable places"
            )
        self.places = places
        self.p, self.k, self.seed = places_per_batch, images_per_place, seed
        self.epoch, self.start_batch, self.rank, self.world = epoch, start_batch, rank, world_size
        self.cities, self.batching = cities, batching
        self._order: np.ndarray | None = None

    def order(self) -> np.ndarray:
        """Every place once, in this epoch's batch order (computed once per sampler)."""
        if self._order is not None:
            return self._order
        if self.batching == "global":
            self._order = np.random.default_rng(_seed(self.seed, self.epoch)).permutation(
                len(self.places)
            )
            return self._order
        # the fixed order does not depend on the epoch; -1 keeps its seeds apart from epoch 0's
        epoch = -1 if self.batching == "in-city-fixed" else self.epoch
        city_of = np.asarray(self.cities)
        parts = []
        for city in dict.fromkeys(city_of.tolist()):  # the cities' listed order
            members = np.flatnonzero(city_of == city)
            sizes = np.array([len(self.places[i]) for i in members])
            # shuffle the city's images; each place at the first position one of its images took
            rng = np.random.default_rng(_seed(self.seed, epoch, 1 << 40, city))
            position = rng.permutation(int(sizes.sum()))
            first = np.minimum.reduceat(position, np.concatenate([[0], np.cumsum(sizes)[:-1]]))
            parts.append(members[np.argsort(first, kind="stable")])
        self._order = np.concatenate(parts)
        return self._order

    def __len__(self) -> int:
        return len(self.places) // self.p - self.start_batch

    @property
    def batches_per_epoch(self) -> int:
        return len(self.places) // self.p

    def batch(self, b: int) -> list[tuple[int, int, int]]:
        """Batch ``b`` of the epoch, this rank's share: (place, image index, augmentation seed)."""
        order = self.order()
        share = self.p // self.world
        chosen = order[b * self.p : (b + 1) * self.p][self.rank * share : (self.rank + 1) * share]
        items = []
        for place in chosen.tolist():
            rng = np.random.default_rng(_seed(self.seed, self.epoch, b, place))
            for image in rng.choice(len(self.places[place]), self.k, replace=False).tolist():
                items.append((place, image, _seed(self.seed, self.epoch, b, place, image)))
        return items

    def __iter__(self):
        for b in range(self.start_batch, self.batches_per_epoch):
            yield self.batch(b)


AUGMENTATIONS = ("released", "none")


def train_transform(stage: str, image_size: tuple[int, int], mean, std, augment: str = "released"):
    """The released augmentation of each stage: resize (distill: bilinear; finetune: bicubic, as
    D2VPR distillation.py / BoQ datamodule.py), RandAugment with 3 ops, bilinear (finetune at
    magnitude 15), then normalisation. ``augment='none'``: the resize and normalisation only."""
    from torchvision import transforms
    from torchvision.transforms import InterpolationMode

    # RandAugment's geometric ops interpolate bilinearly in both released stages (torchvision's
    # default is nearest): D2VPR dataloaders/GSVCities.py:47, src/dataloaders/datamodule.py:46
    bilinear = InterpolationMode.BILINEAR
    if stage == "distill":
        resize, rand = bilinear, transforms.RandAugment(num_ops=3, interpolation=bilinear)
    elif stage == "finetune":
        resize = InterpolationMode.BICUBIC
        rand = transforms.RandAugment(num_ops=3, magnitude=15, interpolation=bilinear)
    else:
        raise ValueError(f"unknown stage {stage!r}")
    if augment not in AUGMENTATIONS:
        raise VPRBenchError(f"--augment must be one of {list(AUGMENTATIONS)}, got {augment!r}")
    steps = [transforms.Resize(tuple(image_size), interpolation=resize, antialias=True)]
    steps += [rand] if augment == "released" else []
    return transforms.Compose([*steps, transforms.ToTensor(), transforms.Normalize(mean, std)])


class PlaceImages:
    """torch Dataset over (place, image, seed) items: (augmented image [3, H, W], place label)."""

    def __init__(self, data: GSVPlaces, transform) -> None:
        self.data, self.transform = data, transform

    def __getitem__(self, item: tuple[int, int, int]):
        import torch
        from PIL import Image, UnidentifiedImageError

        place, image, seed = item
        path = self.data.root / self.data.places[place][image]
        try:
            with Image.open(path) as im:
                rgb = im.convert("RGB")
        except (UnidentifiedImageError, OSError) as exc:
            raise VPRBenchError(f"{path}: cannot read training image ({exc})") from exc
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.transform(rgb), place
