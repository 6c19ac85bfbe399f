"""CosPlace, EigenPlaces, MixVPR, NetVLAD and Patch-NetVLAD's WPCA: exact parameter counts, the official
key names, strict loading of files in the released layouts, and a forward at the official input size."""

import pytest
import torch
import torchvision

from tests.conftest import check_official_model
from vprbench.errors import VPRBenchError
from vprbench.models import create_model

pytestmark = pytest.mark.filterwarnings("ignore:.*RANDOM INIT")

# (name, options, parameters of the official class as released, descriptor dim)
OFFICIAL = [
    ("cosplace", {}, 27_704_385, 2048),
    ("cosplace", {"dim": 512}, 24_557_121, 512),
    ("eigenplaces", {}, 27_704_385, 2048),
    ("eigenplaces", {"dim": 512}, 24_557_121, 512),
    ("mixvpr", {}, 10_880_900, 4096),
    ("netvlad", {}, 14_780_224, 32_768),
    ("netvlad-pca", {}, 149_002_048, 4096),
    # 14,780,224 + 32,768 x 512 + 512; 14,780,224 + 32,768 x 128 + 128
    ("netvlad-pca512", {}, 31_557_952, 512),
    ("netvlad-pca128", {}, 18_974_656, 128),
]


def _torchvision_keys(drop: tuple[str, ...]) -> list[str]:
    return [k for k in torchvision.models.resnet50().state_dict() if not k.startswith(drop)]


def official_keys(name: str) -> set[str]:
    """The official state-dict keys, written from the official code's structure (not from ours)."""
    if name in ("cosplace", "eigenplaces"):
        # list(resnet50.children())[:-2] in a Sequential: conv1 0, bn1 1, relu 2, maxpool 3, layers 4-7
        index = {
            "conv1": "0",
            "bn1": "1",
            "layer1": "4",
            "layer2": "5",
            "layer3": "6",
            "layer4": "7",
        }
        keys = {"backbone." + index[k.split(".")[0]] + k[k.index(".") :]
                for k in _torchvision_keys(("fc.",))}  # fmt: skip
        return keys | {"aggregation.1.p", "aggregation.3.weight", "aggregation.3.bias"}
    if name.startswith("netvlad"):
        # vgg16.features[:-2] (to conv5_3) as `encoder`, the NetVLAD layer as `pool` (main.py)
        keys = {f"encoder.{k}" for k in torchvision.models.vgg16().features.state_dict()}
        keys |= {"pool.centroids", "pool.conv.weight"}
        return keys | ({"WPCA.0.weight", "WPCA.0.bias"} if "pca" in name else set())
    keys = {"backbone.model." + k for k in _torchvision_keys(("fc.", "layer4."))}
    for i in range(4):
        keys |= {f"aggregator.mix.{i}.mix.{j}.{p}" for j in (0, 1, 3) for p in ("weight", "bias")}
    return keys | {f"aggregator.{m}.{p}" for m in ("channel_proj", "row_proj")
                   for p in ("weight", "bias")}  # fmt: skip


@pytest.mark.parametrize("name,options,params,dim", OFFICIAL)
def test_parameters_keys_and_official_forward(name, options, params, dim):
    check_official_model(name, options, params, dim, official_keys(name))


@pytest.mark.parametrize("layout", ["bare", "module", "model_state_dict"])
def test_released_files_load_strictly(tmp_path, layout):
    torch.manual_seed(1)
    source = create_model("cosplace", dim=512)
    state = {k: v + 0.01 if v.is_floating_point() else v for k, v in source.state_dict().items()}
    if layout == "module":
        state = {f"module.{k}": v for k, v in state.items()}
    elif layout == "model_state_dict":  # with the training extras official scripts save beside it
        state = {"model_state_dict": state, "epoch": 3, "best_r5": 0.9}
    path = tmp_path / "cosplace.pth"
    torch.save(state, path)
    loaded = create_model("cosplace", weights=str(path), dim=512)
    assert not loaded.weights_info.random_init
    expected = {k: v + 0.01 if v.is_floating_point() else v for k, v in source.state_dict().items()}
    for k, v in loaded.state_dict().items():
        torch.testing.assert_close(v, expected[k])
    torch.save({k: v for k, v in expected.items() if k != "aggregation.1.p"}, path)
    with pytest.raises(VPRBenchError, match=r"1 missing key\(s\): aggregation.1.p"):
        create_model("cosplace", weights=str(path), dim=512)
    with pytest.raises(VPRBenchError, match=r"wrong shape"):
        create_model("cosplace", weights=str(path), dim=2048)


def test_official_weights_follow_the_chosen_dim(monkeypatch):
    seen = []

    def fake_resolve(spec, cache_dir, sha256=None):
        seen.append(spec)
        raise VPRBenchError("offline")

    monkeypatch.setattr("vprbench.models.common.resolve_weights", fake_resolve)
    for name, dim in (("eigenplaces", 512), ("cosplace", 2048)):
        with pytest.raises(VPRBenchError, match="offline"):
            create_model(name, weights="official", dim=dim)
    assert seen == [
        "https://github.com/gmberton/EigenPlaces/releases/download/v1.0/ResNet50_512_eigenplaces.pth",
        "https://github.com/gmberton/CosPlace/releases/download/v1.0/ResNet50_2048_cosplace.pth",
    ]
    with pytest.raises(
        VPRBenchError, match=r"option .dim. must be one of \[128, 256, 512, 1024, 2048\]"
    ):
        create_model("eigenplaces", dim=64)
    with pytest.raises(VPRBenchError, match="has no official weights URL"):
        create_model("mixvpr", weights="official")


def test_mixvpr_refuses_another_input_size():
    with pytest.raises(VPRBenchError, match="20 x 20 feature map"), torch.inference_mode():
        create_model("mixvpr")(torch.rand(1, 3, 224, 224))


def test_netvlad_layer_equals_the_official_per_cluster_loop():
    from vprbench.models.netvlad import NetVLADPool

    torch.manual_seed(2)
    pool = NetVLADPool(clusters=5, dim=8)
    x = torch.rand(3, 8, 4, 6)
    # the official forward: normalise inputs, soft-assign, then one residual sum per cluster
    xn = torch.nn.functional.normalize(x, dim=1)
    a = torch.softmax(pool.conv(xn).view(3, 5, -1), dim=1)
    flat = xn.view(3, 8, -1)
    vlad = torch.zeros(3, 5, 8)
    for k in range(5):
        residual = flat - pool.centroids[k][None, :, None]
        vlad[:, k] = (residual * a[:, k : k + 1]).sum(-1)
    vlad = torch.nn.functional.normalize(vlad, dim=2).view(3, -1)
    expected = torch.nn.functional.normalize(vlad, dim=1)
    with torch.no_grad():
        torch.testing.assert_close(pool(x), expected, rtol=1e-5, atol=1e-6)


def test_netvlad_checkpoints_in_their_released_layouts(tmp_path):
    import numpy as np

    torch.manual_seed(3)
    source = create_model("netvlad")
    state = {k: v * 0.5 for k, v in source.state_dict().items()}
    # pytorch-NetVlad's checkpoint: the weights beside epoch, recalls, best score and optimiser
    torch.save({"epoch": 30, "state_dict": state, "recalls": {1: np.float64(0.86)},
                "best_score": np.float64(0.86),
                "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4, "params": [0, 1]}]}},
               tmp_path / "checkpoint.pth.tar")  # fmt: skip
    loaded = create_model("netvlad", weights=str(tmp_path / "checkpoint.pth.tar"))
    torch.testing.assert_close(loaded.pool.centroids, state["pool.centroids"])
    # Patch-NetVLAD's: num_pcs and the state dict with the WPCA layer
    pca = create_model("netvlad-pca")
    torch.save({"num_pcs": 4096, "state_dict": pca.state_dict()}, tmp_path / "wpca.pth.tar")
    loaded = create_model("netvlad-pca", weights=str(tmp_path / "wpca.pth.tar"))
    torch.testing.assert_close(loaded.WPCA[0].bias, pca.WPCA[0].bias)
    with pytest.raises(VPRBenchError, match=r"2 unexpected key\(s\): WPCA.0.bias, WPCA.0.weight"):
        create_model("netvlad", weights=str(tmp_path / "wpca.pth.tar"))


def test_salad_counts_keys_sinkhorn_and_dimension():
    from vprbench.models.salad import sinkhorn_with_dustbin
    from vprbench.models.vit import DINOv2ViT

    torch.manual_seed(4)
    model = create_model("salad")
    assert sum(p.numel() for p in model.parameters()) == 87_991_489
    # the hub DINOv2-B/14 under backbone.model, and the official aggregator's Sequential indices
    keys = {f"backbone.model.{k}" for k in DINOv2ViT("vitb14").state_dict()}
    keys |= {"aggregator.dust_bin"} | {
        f"aggregator.{m}.{i}.{p}"
        for m, idx in (("token_features", (0, 2)), ("cluster_features", (0, 3)), ("score", (0, 3)))
        for i in idx
        for p in ("weight", "bias")
    }
    assert set(model.state_dict()) == keys
    with torch.inference_mode():
        out = model(torch.rand(1, 3, 322, 322))
    assert out.shape == (1, 8448)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(1))
    # the transport plan (times M+N) gives every feature column mass 1 and the clusters with the
    # dust bin rows of mass 1 each, the dust bin N - M, after enough iterations
    scores = torch.randn(2, 4, 10)
    plan = torch.exp(sinkhorn_with_dustbin(scores, torch.tensor(1.0), 200))
    torch.testing.assert_close(plan.sum(1), torch.ones(2, 10), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(plan.sum(2)[:, :4], torch.ones(2, 4), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(plan.sum(2)[:, 4], torch.full((2,), 6.0), rtol=1e-4, atol=1e-4)
