"""Each model as its paper evaluated it (vprbench/official.py and the cards): native resolution,
released files per benchmark, precision, batch conventions, and what a record says when a run
differs from the official pipeline."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from tests.conftest import make_vpr_bench_folder
from vprbench.cli import cli
from vprbench.datasets.formatted import load_formatted
from vprbench.datasets.manage import import_dataset
from vprbench.datasets.protocols import BATCH_CONVENTIONS, load_registry
from vprbench.errors import VPRBenchError
from vprbench.extract.official import differences, pipeline
from vprbench.extract.request import resolve_preprocess
from vprbench.extract.run import extract
from vprbench.extract.settings import ExtractSettings
from vprbench.models import create_model, get_card
from vprbench.paths import cache_root, data_root


@pytest.fixture
def mixed_sizes(tmp_path):
    """A formatted dataset whose images come in three sizes (as MSLS's do)."""
    folder = make_vpr_bench_folder(tmp_path / "src", 6, [[0], [3], [5]], size=(40, 56))
    sizes = {
        "ref/0000001.png": (64, 40),
        "ref/0000004.png": (72, 48),
        "query/0000001.png": (72, 48),
    }
    for rel, size in sizes.items():
        with Image.open(folder / rel) as im:
            im.resize(size).save(folder / rel)
    import_dataset(folder, "vpr-bench", "mixed", data_root(), load_registry())
    return load_formatted("mixed", data_root())


def test_native_resolution_equals_one_image_at_a_time(mixed_sizes):
    """CosPlace/EigenPlaces/NetVLAD evaluate at native resolution: each descriptor is what the model
    gives for that image alone, at its own size, through ToTensor and Normalize (no resize)."""
    settings = ExtractSettings(model="effnet-lite0-gem", image_size="native", batch_size=4)
    result = extract(mixed_sizes, settings, cache_root())
    assert result.preprocess.image_size is None
    model = create_model("effnet-lite0-gem")
    card = get_card("effnet-lite0-gem")
    base = T.Compose([T.ToTensor(), T.Normalize(card.mean, card.std)])
    for split, descriptors in (("database", result.descriptors.database),
                               ("queries", result.descriptors.queries)):  # fmt: skip
        for i, rel in enumerate(mixed_sizes.split(split)):
            with Image.open(mixed_sizes.image_path(rel)) as im:
                x = base(im.convert("RGB"))[None]
            with torch.inference_mode():
                alone = model(x)[0].numpy()
            np.testing.assert_allclose(descriptors[i], alone, atol=1e-5)  # batched, channels last
    # the first database batch of 4 holds images of two sizes
    shapes = {Image.open(mixed_sizes.image_path(r)).size for r in mixed_sizes.split("database")[:4]}
    assert len(shapes) == 2


def test_native_resolution_is_the_card_default_of_the_no_resize_models():
    for name in ("cosplace", "eigenplaces", "netvlad"):
        card = get_card(name)
        assert card.native_resolution and card.image_size == (480, 640)  # profiled at Pitts' size
        assert resolve_preprocess(card, ExtractSettings(model=name)).image_size is None
        chosen = resolve_preprocess(card, ExtractSettings(model=name, image_size=(512, 512)))
        assert chosen.image_size == (512, 512)
    assert "msls-val-full" in get_card("cosplace").protocol


def test_native_resolution_refuses_batch_dependent_models_and_processes(
    mixed_sizes, batchmean_model
):
    with pytest.raises(VPRBenchError, match="batch-dependent .* --image-size H W"):
        extract(mixed_sizes, ExtractSettings(model=batchmean_model, image_size="native"),
                cache_root())  # fmt: skip
    settings = ExtractSettings(model="effnet-lite0-gem", image_size="native", loader="processes",
                               workers=1)  # fmt: skip
    with pytest.raises(VPRBenchError, match="native resolution needs --loader threads"):
        extract(mixed_sizes, settings, cache_root())


def test_resize_stage_and_antialias_are_in_the_cache_key(tiny_dataset):
    base = extract(tiny_dataset, ExtractSettings(model="pixels"), cache_root())
    assert base.preprocess.resize == "pil" and base.preprocess.antialias
    stage = extract(
        tiny_dataset, ExtractSettings(model="pixels", resize="normalised"), cache_root()
    )
    sharp = ExtractSettings(model="pixels", resize="normalised", antialias=False)
    unaliased = extract(tiny_dataset, sharp, cache_root())
    keys = [r.descriptors.key["preprocess"] for r in (base, stage, unaliased)]
    assert "resize" not in keys[0]  # PIL: the key of descriptors cached before stages existed
    assert [(k["resize"], k["antialias"]) for k in keys[1:]] == [
        ("normalised", True), ("normalised", False)]  # fmt: skip
    assert len({r.descriptors.path for r in (base, stage, unaliased)}) == 3
    # 24x32 -> 32x32 upscales: antialias changes nothing there for bilinear, but the stage does
    assert not np.array_equal(base.descriptors.database, stage.descriptors.database)


def test_supervlad_runs_at_its_readme_batch_size():
    assert BATCH_CONVENTIONS["supervlad"] == 8
    for name, protocol in load_registry().items():
        assert protocol.official_batch_size("supervlad")[0] == 8, name


def test_mixvpr_uses_its_validation_interpolation():
    card = get_card("mixvpr")
    assert (card.interpolation, card.resize, card.dtype) == ("bilinear", "pil", "fp16")
    assert "GSVCitiesDataloader.py:82-85" in card.pipeline_source


def test_pitts30k_val_protocol():
    protocol = load_registry()["pitts30k-val"]
    assert (protocol.database_count, protocol.queries_count) == (10_000, 7_608)
    assert (protocol.positive_rule, protocol.threshold) == ("utm-radius", 25.0)
    assert protocol.source_files == ("pitts30k_val.mat",)
    assert "pitts30k-val" in get_card("netvlad").protocol


def test_release_names_pick_the_file_and_say_when_there_is_no_url(monkeypatch):
    asked = []

    def fake_resolve(spec, cache_dir, sha256=None):
        asked.append(spec)
        raise VPRBenchError("stop here")

    monkeypatch.setattr("vprbench.models.common.resolve_weights", fake_resolve)
    with pytest.raises(VPRBenchError, match="stop here"):
        create_model("netvlad-pca", weights="official:mapillary")
    assert asked == [
        "https://huggingface.co/TobiasRobotics/Patch-NetVLAD/resolve/main/mapillary_WPCA4096.pth.tar"
    ]
    with pytest.raises(VPRBenchError, match=r"no release 'msls'; its releases: mapillary, pitts"):
        create_model("netvlad-pca", weights="official:msls")
    with pytest.raises(VPRBenchError, match=r"SelaVPR_msls.pth\) has no direct download URL"):
        create_model("selavpr", weights="official:msls")
    with pytest.raises(VPRBenchError, match=r"releases: official:msls, official:pitts30k"):
        create_model("selavpr", weights="official")


def test_a_release_is_known_by_its_file_name(tmp_path):
    model = create_model("pixels")
    torch.save(model.state_dict(), tmp_path / "x.pth")
    card = get_card("selavpr")
    assert card.release_for("msls-val").file == "SelaVPR_msls.pth"
    assert card.release_for("pitts30k-test").file == "SelaVPR_pitts30k.pth"
    assert card.release_for("sped") is None
    assert {r.name for r in get_card("d2vpr-encoder").releases} == {"distillation", "finetune"}
    assert get_card("cricavpr-noencoder").releases == ()  # CricaVPR.pth holds the encoder


def test_differences_name_what_is_not_official():
    selavpr = get_card("selavpr")
    official = resolve_preprocess(selavpr, ExtractSettings(model="selavpr"))
    assert differences(selavpr, official, "fp32", "msls-val", "msls") == []
    pil = resolve_preprocess(selavpr, ExtractSettings(model="selavpr", resize="pil"))
    assert differences(selavpr, pil, "fp32", "msls-val", "pitts30k") == [
        "resize stage pil (official: normalised)",
        "antialias True (official: False)",
        "weights SelaVPR_pitts30k.pth (official for msls-val: SelaVPR_msls.pth, "
        "--weights official:msls)",
    ]
    salad = get_card("salad")
    pre = resolve_preprocess(salad, ExtractSettings(model="salad"))
    assert differences(salad, pre, "fp32", None, None) == ["dtype fp32 (official: fp16)"]
    cosplace = get_card("cosplace")
    sized = resolve_preprocess(cosplace, ExtractSettings(model="cosplace", image_size=(512, 512)))
    assert differences(cosplace, sized, "fp32", None, None) == [
        "input 512x512 (official: native resolution)"
    ]


def test_record_carries_the_official_pipeline(tiny_dataset, tmp_path):
    from vprbench.evaluate.run import evaluate

    settings = ExtractSettings(model="pixels", resize="unit", antialias=False)
    extracted = extract(tiny_dataset, settings, cache_root())
    record, _ = evaluate(tiny_dataset, extracted, ks=(1, 5), results_dir=tmp_path / "results")
    official = record["settings"]["official"]
    assert official["dtype"] == "fp32"
    assert official["preprocess"]["resize"] == "pil"
    assert official["differences"] == [
        "resize stage unit (official: pil)", "antialias False (official: True)"]  # fmt: skip
    assert record["settings"]["preprocess"]["resize"] == "unit"


def test_fp16_is_cuda_autocast():
    with pytest.raises(VPRBenchError, match="fp16 is autocast on CUDA"):
        extract(None, ExtractSettings(model="pixels", dtype="fp16"), cache_root())


def test_models_info_shows_the_official_pipeline(capsys, monkeypatch):
    from click.testing import CliRunner

    out = CliRunner().invoke(cli, ["models", "info", "cricavpr"])
    assert out.exit_code == 0, out.output
    info = json.loads(out.output)["official_pipeline"]
    assert (info["resize"], info["antialias"], info["input"]) == ("normalised", False, "224x224")
    assert info["inference_batch_size"]["default"] == 16
    assert info["inference_batch_size"]["per_protocol"]["pitts30k-test"] == 8
    assert "torchvision==0.15.0" in info["source"]
    boq = pipeline(get_card("boq-dinov2"))
    assert (boq["resize"], boq["interpolation"], boq["dtype"]) == ("uint8", "bicubic", "fp16")
    assert pipeline(get_card("eigenplaces"))["input"] == "native resolution"
    releases = pipeline(get_card("netvlad-pca"))["releases"]
    assert [r["weights"] for r in releases] == ["official:mapillary", "official:pitts"]


def test_device_decoding_follows_the_stage_and_native_resolution(tmp_path):
    """--decode device: the float stages are normalised (or scaled) on the device, then resized
    there, as the loader does in numpy; native resolution keeps each image's own size."""
    from vprbench.datasets.images import (
        EncodedImageList,
        Preprocess,
        collate_encoded,
        decode_on_device,
        load_array,
    )

    rng = np.random.default_rng(1)
    paths = []
    for i, (h, w) in enumerate(((120, 160), (90, 70))):
        path = tmp_path / f"{i}.png"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    for stage, antialias in (("normalised", False), ("unit", True)):
        pre = Preprocess((50, 60), "bilinear", mean, std, resize=stage, antialias=antialias)
        _, encoded, errors = collate_encoded([EncodedImageList(paths)[i] for i in range(2)])
        out, errors = decode_on_device(encoded, errors, pre, paths, torch.device("cpu"))
        assert out.dtype == torch.float32 and out.shape == (2, 3, 50, 60)
        for i, path in enumerate(paths):
            expected = load_array(path, pre, normalise=True)[0]
            np.testing.assert_allclose(out[i].permute(1, 2, 0).numpy(), expected, atol=1e-5)
    native = Preprocess(None, "bilinear", mean, std)
    _, encoded, errors = collate_encoded([EncodedImageList(paths)[i] for i in range(2)])
    out, _ = decode_on_device(encoded, errors, native, paths, torch.device("cpu"))
    assert [tuple(t.shape) for t in out] == [(3, 120, 160), (3, 90, 70)]
    assert out[0].dtype == torch.uint8


def test_official_pca_alternative_stages_and_batch_sizes_in_differences():
    from vprbench.extract.official import pca_difference

    assert get_card("d2vpr").pca_dim == 4096 and get_card("d2vpr-encoder").pca_dim == 4096
    assert pca_difference(4096, None) == ["no PCA (official: PCA-4096)"]
    assert pca_difference(None, 256) == ["PCA-256 (official: no PCA)"]
    assert pca_difference(4096, 4096) == []
    boq = get_card("boq-dinov2")  # its README snippet resizes the [0, 1] tensor: also official
    unit = resolve_preprocess(boq, ExtractSettings(model="boq-dinov2", resize="unit"))
    assert differences(boq, unit, "fp16", None, None) == []
    pil = resolve_preprocess(boq, ExtractSettings(model="boq-dinov2", resize="pil"))
    assert differences(boq, pil, "fp16", None, None) == ["resize stage pil (official: uint8)"]
    supervlad = get_card("supervlad")
    pre = resolve_preprocess(supervlad, ExtractSettings(model="supervlad"))
    assert differences(supervlad, pre, "fp32", None, None, (16, 8)) == [
        "inference batch size 16 (official: 8)"
    ]


def test_patch_netvlad_file_saved_under_its_download_name_is_recognised():
    pitts = get_card("netvlad-pca").release("pitts")
    assert pitts.named("pittsburgh_WPCA4096.pth.tar") and pitts.named("pitts_WPCA4096.pth.tar")
    assert not pitts.named("mapillary_WPCA4096.pth.tar")


def test_batch_dependent_record_names_a_batch_size_other_than_the_official(
    tiny_dataset, batchmean_model
):
    result = extract(tiny_dataset, ExtractSettings(model=batchmean_model, batch_size=5),
                     cache_root())  # fmt: skip
    official = BATCH_CONVENTIONS["d2vpr"]  # 'tiny' is no registered protocol: the default
    assert result.official["differences"] == [f"inference batch size 5 (official: {official})"]
