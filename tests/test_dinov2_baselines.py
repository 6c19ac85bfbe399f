"""BoQ (ResNet-50, DINOv2), SuperVLAD and SelaVPR: exact parameter counts, the official key names
(written here from the official code's structure, not from vprbench's modules), forwards checked
against the official formulas, batch dependence, and strict loading of the released layouts."""

import numpy as np
import pytest
import torch
import torchvision

from tests.conftest import check_official_model
from vprbench.errors import VPRBenchError
from vprbench.models import create_model

pytestmark = pytest.mark.filterwarnings("ignore:.*RANDOM INIT")


def hub_vit_keys(depth: int) -> set[str]:
    """facebookresearch/dinov2 vision_transformer.py, block_chunks=0, init_values set, no registers."""
    keys = {"cls_token", "pos_embed", "mask_token", "patch_embed.proj.weight",
            "patch_embed.proj.bias", "norm.weight", "norm.bias"}  # fmt: skip
    for i in range(depth):
        keys |= {f"blocks.{i}.ls1.gamma", f"blocks.{i}.ls2.gamma"}
        for m in ("norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2"):
            keys |= {f"blocks.{i}.{m}.weight", f"blocks.{i}.{m}.bias"}
    return keys


def _wb(prefix: str, *modules: str) -> set[str]:
    return {f"{prefix}{m}.{p}" for m in modules for p in ("weight", "bias")}


def _mha(prefix: str) -> set[str]:  # torch.nn.MultiheadAttention, equal q/k/v dims
    return {f"{prefix}in_proj_weight", f"{prefix}in_proj_bias"} | _wb(prefix, "out_proj")


def _encoder_layer(prefix: str) -> set[str]:  # torch.nn.TransformerEncoderLayer
    return _mha(prefix + "self_attn.") | _wb(prefix, "linear1", "linear2", "norm1", "norm2")


def official_keys(name: str) -> set[str]:
    if name == "boq-resnet50":
        # src/backbones.py ResNet: Sequential(conv1, bn1, relu, maxpool, layer1, layer2, layer3)
        index = {"conv1": "0", "bn1": "1", "layer1": "4", "layer2": "5", "layer3": "6"}
        keys = {"backbone.net." + index[k.split(".")[0]] + k[k.index(".") :]
                for k in torchvision.models.resnet50().state_dict()
                if k.split(".")[0] in index}  # fmt: skip
    elif name == "boq-dinov2":
        keys = {f"backbone.dino.{k}" for k in hub_vit_keys(12)}  # src/backbones.py DinoV2.dino
    elif name.startswith("supervlad"):
        keys = {f"backbone.{k}" for k in hub_vit_keys(12)} | {"aggregation.conv.weight"}
        if name == "supervlad":  # nn.TransformerEncoder(num_layers=2)
            keys |= _encoder_layer("encoder.layers.0.") | _encoder_layer("encoder.layers.1.")
        return keys
    else:  # selavpr: network.py GeoLocalizationNet, backbone/dinov2/block.py adapters
        keys = {f"backbone.{k}" for k in hub_vit_keys(24)} | {"aggregation.1.p"}
        for i in range(24):
            keys |= _wb(f"backbone.blocks.{i}.", *(f"adapter{a}.D_fc{f}" for a in (1, 2)
                                                     for f in (1, 2)))  # fmt: skip
        return keys | _wb("LocalAdapt.", "upconv1", "upconv2")
    # src/boq.py BoQ with two BoQBlocks
    keys |= _wb("aggregator.", "proj_c", "norm_input", "fc")
    for i in range(2):
        p = f"aggregator.boqs.{i}."
        keys |= {p + "queries"} | _encoder_layer(p + "encoder.") | _mha(p + "self_attn.")
        keys |= _mha(p + "cross_attn.") | _wb(p, "norm_q", "norm_out")
    return keys


# (name, options, parameters of the official class as released, descriptor dim)
OFFICIAL = [
    ("boq-resnet50", {}, 23_844_448, 16_384),
    ("boq-dinov2", {}, 95_206_560, 12_288),
    ("supervlad", {}, 97_612_288, 3_072),
    ("supervlad", {"cross_image_encoder": False}, 86_584_320, 3_072),
    ("selavpr", {}, 357_428_609, 1_024),
]


@pytest.mark.parametrize("name,options,params,dim", OFFICIAL)
def test_parameters_keys_and_official_forward(name, options, params, dim):
    keys = official_keys("supervlad-noencoder" if options else name)
    check_official_model(name, options, params, dim, keys)


def test_boq_aggregator_equals_the_official_steps():
    from vprbench.models.boq import BoQAggregator

    torch.manual_seed(1)
    agg = BoQAggregator(channels=96, proj=128, queries=8, layers=2, rows=4).eval()
    x = torch.randn(3, 96, 5, 6)
    with torch.no_grad():
        # src/boq.py forward, with the attention weights computed as the official code does
        t = agg.norm_input(agg.proj_c(x).flatten(2).permute(0, 2, 1))
        outs = []
        for block in agg.boqs:
            t = block.encoder(t)
            q = block.queries.repeat(3, 1, 1)
            q = block.norm_q(q + block.self_attn(q, q, q)[0])
            out, _ = block.cross_attn(q, t, t)
            outs.append(block.norm_out(out))
        expected = agg.fc(torch.cat(outs, dim=1).permute(0, 2, 1)).flatten(1)
        expected = torch.nn.functional.normalize(expected, p=2, dim=-1)
        torch.testing.assert_close(agg(x), expected, rtol=1e-5, atol=1e-6)
    assert agg(x).shape == (3, 128 * 4)


def test_supervlad_layer_equals_the_official_per_cluster_loop():
    from vprbench.models.supervlad import SuperVLADLayer

    torch.manual_seed(2)
    layer = SuperVLADLayer(clusters=3, ghosts=1, dim=8)
    x = torch.rand(2, 8, 4, 5)
    # model/supervlad_layer.py forward: softmax over clusters + ghost, per-cluster weighted sums of
    # the normalised features (no centroid), ghost dropped, intra- then global L2
    xn = torch.nn.functional.normalize(x, dim=1)
    a = torch.softmax(layer.conv(xn).view(2, 4, -1), dim=1)
    vlad = torch.zeros(2, 4, 8)
    for k in range(4):
        vlad[:, k] = (xn.view(2, 8, -1) * a[:, k : k + 1]).sum(-1)
    vlad = torch.nn.functional.normalize(vlad[:, :-1], dim=2).view(2, -1)
    expected = torch.nn.functional.normalize(vlad, dim=1)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-6)


def test_supervlad_encoder_mixes_the_images_of_a_batch():
    from vprbench.datasets.protocols import load_registry

    torch.manual_seed(3)
    images = torch.rand(3, 3, 322, 322)
    with torch.inference_mode():
        model = create_model("supervlad").eval()
        assert model.batch_dependent
        together = model(images)
        alone = model(images[:1])
        swapped = model(images[[2, 1, 0]])
        plain = create_model("supervlad", cross_image_encoder=False).eval()
        assert not plain.batch_dependent
        plain_together, plain_alone = plain(images), plain(images[:1])
    # attention across the batch: a batch-mate changes a descriptor, the order does not
    assert (together[0] - alone[0]).abs().max() > 1e-4  # 9e-4 here; without the encoder < 1e-5
    torch.testing.assert_close(swapped, together[[2, 1, 0]], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(plain_together[:1], plain_alone, rtol=1e-4, atol=1e-5)
    protocol = load_registry().get("pitts30k-test")
    assert protocol.official_batch_size("supervlad") == (8, "supervlad default for pitts30k-test")


def test_selavpr_block_adapters_follow_the_official_formula():
    from vprbench.models.vit import Block

    torch.manual_seed(4)
    block = Block(64, 4, "sela").eval()
    for p in block.parameters():  # LayerScale starts at 1: make every term visible
        torch.nn.init.normal_(p, std=0.1)
    x = torch.randn(2, 1 + 3 * 3, 64)
    relu = torch.nn.functional.relu
    with torch.no_grad():
        a = block.attn(block.norm1(x))
        a = a + block.adapter1.D_fc2(relu(block.adapter1.D_fc1(a)))  # serial, with its skip
        y = x + block.ls1(a)
        n = block.norm2(y)
        parallel = block.adapter2.D_fc2(relu(block.adapter2.D_fc1(n)))  # no skip
        expected = y + block.ls2(block.mlp(n) + 0.2 * parallel)
        torch.testing.assert_close(block(x, (3, 3)), expected)
    with pytest.raises(VPRBenchError, match="16 x 16 patch grid"), torch.inference_mode():
        create_model("selavpr")(torch.rand(1, 3, 322, 322))


def test_released_layouts_load(tmp_path):
    torch.manual_seed(5)
    source = create_model("supervlad", cross_image_encoder=False)
    state = {k: v * 0.5 for k, v in source.state_dict().items()}
    # eval.py/util.py: a DataParallel model's state dict beside the training state
    torch.save({"model_state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch_num": 7,
                "optimizer_state_dict": {"state": {}, "param_groups": []},
                "best_r5": np.float64(91.2), "not_improved_num": 1}, tmp_path / "SuperVLAD.pth")  # fmt: skip
    loaded = create_model("supervlad", weights=str(tmp_path / "SuperVLAD.pth"),
                          cross_image_encoder=False)  # fmt: skip
    torch.testing.assert_close(loaded.aggregation.conv.weight, state["aggregation.conv.weight"])
    with pytest.raises(VPRBenchError, match=r"missing key\(s\): encoder.layers.0."):
        create_model("supervlad", weights=str(tmp_path / "SuperVLAD.pth"))
    boq = create_model("boq-resnet50")
    torch.save(boq.state_dict(), tmp_path / "resnet50_16384.pth")  # hubconf: a bare state dict
    loaded = create_model("boq-resnet50", weights=str(tmp_path / "resnet50_16384.pth"))
    torch.testing.assert_close(loaded.aggregator.boqs[1].queries, boq.aggregator.boqs[1].queries)
    assert loaded.card.weights.url.endswith("/v1.0/resnet50_16384.pth")


BASELINES = ["netvlad", "netvlad-pca", "cosplace", "eigenplaces", "mixvpr", "salad", "boq-resnet50",
            "boq-dinov2", "supervlad", "selavpr"]  # fmt: skip


def test_every_baseline_card_states_its_protocol_and_imagenet_normalisation():
    from vprbench.choices import IMAGENET_MEAN, IMAGENET_STD
    from vprbench.models import get_card

    for name in BASELINES:
        card = get_card(name)
        assert card.protocol and card.reference, name
        assert (card.mean, card.std) == (IMAGENET_MEAN, IMAGENET_STD), name
    licences = {get_card(n).licence.split(" ")[0] for n in BASELINES}
    assert licences == {"none", "MIT", "GPL-3.0"}  # netvlad: "none stated: ..."
    assert get_card("netvlad").licence.startswith(
        "none stated: Nanne/pytorch-NetVlad has no LICENSE"
    )
    assert get_card("supervlad").batch_dependent and get_card("supervlad").batch_convention
