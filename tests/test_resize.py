"""Each model card's default preprocessing against the official sequence of torchvision calls, and
the resize stages (vprbench/datasets/resize.py) against torch's interpolate."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision import transforms as T
from torchvision.io import decode_image
from torchvision.transforms import InterpolationMode, v2
from torchvision.transforms import functional as TF

from vprbench.datasets.images import load_array
from vprbench.datasets.resize import resize_float, taps
from vprbench.errors import VPRBenchError
from vprbench.extract.request import resolve_preprocess
from vprbench.extract.settings import ExtractSettings
from vprbench.models import get_card, list_models

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
BASE = T.Compose([T.ToTensor(), T.Normalize(MEAN, STD)])


def _normalised_then_resized(antialias):
    """Lu-Feng's datasets_ws.py (CricaVPR, SelaVPR, SuperVLAD), DINO-Mix's eval_files/datasets_ws.py
    and D2VPR's: base_transform, then transforms.functional.resize of the float tensor with no
    antialias argument, which is False for tensors under their torchvision 0.15 (DINO-Mix: 0.14) and
    True under D2VPR's 0.18. VPR-methods-evaluation's test_dataset.py (MegaLoc) does the same with
    transforms.Resize(size, antialias=True) after Normalize."""
    return lambda path, size: TF.resize(
        BASE(Image.open(path).convert("RGB")), list(size), antialias=antialias
    )


def _pil(interpolation, mean=MEAN, std=STD):
    """T.Resize on the PIL image, then ToTensor and Normalize (SALAD eval.py, MixVPR
    GSVCitiesDataloader valid_transform, Patch-NetVLAD input_transform)."""
    mode = InterpolationMode(interpolation)
    after = T.Compose([T.ToTensor(), T.Normalize(mean, std)])
    return lambda path, size: after(T.Resize(list(size), mode)(Image.open(path).convert("RGB")))


def _boq(path, size):
    """Bag-of-Queries validation: decode_image, then datamodule.py's val_transform."""
    pipeline = v2.Compose([v2.Resize(list(size), interpolation=3),
                           v2.ToDtype(torch.float32, scale=True), v2.Normalize(MEAN, STD)])  # fmt: skip
    return pipeline(decode_image(str(path), mode="RGB"))


def _native(path, size):
    """CosPlace / EigenPlaces test_dataset.py, pytorch-NetVlad: ToTensor and Normalize, no resize."""
    return BASE(Image.open(path).convert("RGB"))


# Written from the official code, not from the cards: a card that changes, or a new card without an
# entry here, fails the test.
OFFICIAL = {
    "cricavpr": (_normalised_then_resized(False), (224, 224)),
    "cricavpr-noencoder": (_normalised_then_resized(False), (224, 224)),
    "selavpr": (_normalised_then_resized(False), (224, 224)),
    "supervlad": (_normalised_then_resized(False), (322, 322)),
    "d2vpr": (_normalised_then_resized(True), (224, 224)),
    "d2vpr-encoder": (_normalised_then_resized(True), (224, 224)),
    "salad": (_pil("bilinear"), (322, 322)),
    "cliquemining": (_pil("bilinear"), (322, 322)),  # cliquemining eval.py input_transform
    "megaloc": (_normalised_then_resized(True), (322, 322)),
    "dino-mix": (_normalised_then_resized(False), (224, 224)),
    "edtformer": (_normalised_then_resized(False), (322, 322)),  # datasets_ws.py, torchvision 0.15
    "fol": (_normalised_then_resized(False), (504, 504)),  # datasets.py, parser.py --resize 504
    "fol-base": (_normalised_then_resized(False), (322, 322)),  # the README's 322x322 table
    # SelaVPRplusplus datasets_ws.py; no pinned torchvision: the lab's 0.15 (see the card)
    "selavpr++": (_normalised_then_resized(False), (322, 322)),
    "selavpr++-base": (_normalised_then_resized(False), (322, 322)),
    "selavpr++-rerank": (_normalised_then_resized(False), (322, 322)),
    "selavpr++-base-rerank": (_normalised_then_resized(False), (322, 322)),
    "mixvpr": (_pil("bilinear"), (320, 320)),
    "netvlad-pca": (_pil("bilinear"), (480, 640)),
    "netvlad-pca512": (_pil("bilinear"), (480, 640)),
    "netvlad-pca128": (_pil("bilinear"), (480, 640)),
    "boq-resnet50": (_boq, (384, 384)),
    "boq-dinov2": (_boq, (322, 322)),
    "cosplace": (_native, None),
    "eigenplaces": (_native, None),
    "netvlad": (_native, None),
    # no official evaluation: what their cards say
    "dinov2-gem": (_pil("bicubic"), (224, 224)),
    "effnet-lite0-gem": (_pil("bilinear", [127 / 255] * 3, [128 / 255] * 3), (224, 224)),
    "pixels": (_pil("bilinear", [0.0] * 3, [1.0] * 3), (32, 32)),
}
FLOAT_TOLERANCE = 1e-5  # float rounding of the same operations (values span about -2.1 to 2.6)


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    """A 480x640 JPEG with edges and texture, so that downscaling without antialiasing aliases."""
    rng = np.random.default_rng(7)
    y, x = np.mgrid[0:480, 0:640]
    base = np.stack([(x * 0.4) % 256, (y * 0.5) % 256, ((x + y) * 0.3) % 256], -1)
    stripes = ((x // 3 + y // 5) % 2 * 60)[..., None]
    pixels = np.clip(base + stripes + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
    path = tmp_path_factory.mktemp("photo") / "photo.jpg"
    Image.fromarray(pixels).save(path, quality=90)
    return path


def test_every_card_is_listed():
    assert sorted(OFFICIAL) == list_models()


@pytest.mark.parametrize("name", sorted(OFFICIAL))
def test_card_default_matches_official_torchvision_calls(name, photo):
    official, size = OFFICIAL[name]
    pre = resolve_preprocess(get_card(name), ExtractSettings(model=name))
    assert pre.image_size == size
    ours, error = load_array(photo, pre, normalise=True)
    assert error == ""
    theirs = official(photo, size).permute(1, 2, 0).numpy()
    assert ours.shape == theirs.shape
    diff = np.abs(ours - theirs).max()
    if pre.float_resize:
        assert diff <= FLOAT_TOLERANCE
    else:  # the same integer pixels (one grey level is 0.017), normalised within float rounding
        assert diff <= 1e-6  # (BoQ's v2.ToDtype multiplies by 1/255 where ToTensor divides)


def test_unantialiased_official_resize_is_far_from_pil(photo):
    """Why the stage matters: CricaVPR's official pixels differ from PIL's by whole grey levels."""
    official = _normalised_then_resized(False)(photo, (224, 224)).permute(1, 2, 0).numpy()
    pil = _pil("bilinear")(photo, (224, 224)).permute(1, 2, 0).numpy()
    assert np.abs(official - pil).mean() > 2 / 255 / 0.229  # more than two grey levels on average


@pytest.mark.parametrize("stage", ["pil", "uint8", "unit", "normalised"])
@pytest.mark.parametrize("antialias", [True, False])
def test_each_stage_against_torchvision(stage, antialias, photo):
    if stage == "pil" and not antialias:
        with pytest.raises(VPRBenchError, match="PIL always antialiases"):
            resolve_preprocess(
                get_card("d2vpr"), ExtractSettings("d2vpr", resize=stage, antialias=False)
            )
        return
    settings = ExtractSettings(
        "d2vpr", image_size=(200, 300), resize=stage, antialias=antialias, interpolation="bicubic"
    )
    pre = resolve_preprocess(get_card("d2vpr"), settings)
    assert (pre.resize, pre.antialias, pre.image_size) == (stage, antialias, (200, 300))
    ours = load_array(photo, pre, normalise=True)[0]
    rgb = Image.open(photo).convert("RGB")
    mode = InterpolationMode.BICUBIC
    if stage == "pil":
        theirs = BASE(T.Resize([200, 300], mode)(rgb))
    elif stage == "uint8":
        resized = v2.functional.resize(TF.pil_to_tensor(rgb), [200, 300], mode, antialias=antialias)
        theirs = T.Normalize(MEAN, STD)(resized.float() / 255)
    elif stage == "unit":
        resized = TF.resize(TF.to_tensor(rgb), [200, 300], mode, antialias=antialias)
        theirs = T.Normalize(MEAN, STD)(resized)
    else:
        theirs = TF.resize(BASE(rgb), [200, 300], mode, antialias=antialias)
    diff = np.abs(ours - theirs.permute(1, 2, 0).numpy()).max()
    assert diff <= (FLOAT_TOLERANCE if pre.float_resize else 0.0)


def test_uint8_stage_defers_normalisation(photo):
    pre = resolve_preprocess(get_card("boq-dinov2"), ExtractSettings("boq-dinov2"))
    pixels = load_array(photo, pre, normalise=False)[0]
    assert pixels.dtype == np.uint8 and pixels.shape == (322, 322, 3)


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic", "nearest"])
@pytest.mark.parametrize("antialias", [False, True])
@pytest.mark.parametrize(("n_in", "n_out"), [(640, 224), (480, 322), (37, 224), (1000, 999)])
def test_taps_are_torch_weights(interpolation, antialias, n_in, n_out):
    """Interpolating the identity gives torch's weight of every input pixel for every output one."""
    if interpolation == "nearest" and antialias:
        return
    corners = None if interpolation == "nearest" else False
    theirs = F.interpolate(torch.eye(n_in)[None, None], size=(n_in, n_out), mode=interpolation,
                           align_corners=corners, antialias=antialias)[0, 0].numpy()  # fmt: skip
    index, weights = taps(n_in, n_out, interpolation, antialias)
    ours = np.zeros_like(theirs)
    for j in range(n_out):
        np.add.at(ours[:, j], index[j], weights[j])
    # bilinear and nearest bit for bit; bicubic's cubic coefficients within float rounding
    assert np.abs(ours - theirs).max() <= (1e-6 if interpolation == "bicubic" else 0.0)


def test_resize_float_matches_interpolate_on_random_values():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((97, 131, 3)).astype(np.float32)
    t = torch.from_numpy(x).permute(2, 0, 1)[None]
    for size in ((31, 50), (200, 260)):
        for mode in ("bilinear", "bicubic"):
            for antialias in (False, True):
                theirs = F.interpolate(t, size=size, mode=mode, align_corners=False,
                                       antialias=antialias)[0].permute(1, 2, 0).numpy()  # fmt: skip
                ours = resize_float(x, size, mode, antialias)
                assert np.abs(ours - theirs).max() <= 1e-5
