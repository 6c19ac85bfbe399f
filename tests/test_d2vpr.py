"""CricaVPR and D²-VPR: exact sizes, official checkpoint layouts, TDDA quirks, switches, batch dependence."""

import warnings

import pytest
import torch
import torch.nn.functional as F
from fvcore.nn import FlopCountAnalysis

from vprbench.errors import VPRBenchError
from vprbench.models import create_model
from vprbench.models.aggregators import TDDA
from vprbench.models.d2vpr import map_official_keys
from vprbench.models.vit import DINOv2ViT

torch.set_grad_enabled(False)


def build(name, **options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(0)
        return create_model(name, **options)


def n_params(module):
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize(
    "name,total",
    [("cricavpr", 106_761_665), ("d2vpr-encoder", 38_239_589), ("d2vpr", 27_211_621)],
)
def test_exact_parameter_counts(name, total):
    assert n_params(build(name)) == total


def test_component_sizes_and_headline_reduction():
    student, teacher = build("d2vpr-encoder"), build("cricavpr")
    adapters = lambda m: sum(n_params(b.adapter) for b in m.backbone.blocks)  # noqa: E731
    assert adapters(student) == 2_295_648 and adapters(teacher) == 9_153_216
    assert n_params(student.drm) == 1_181_952
    assert n_params(student.aggregator.offset_generator) == 788_996
    assert n_params(student.aggregator.topdown_fusion) == 789_504
    assert n_params(student.aggregator.pos_encoder) == 99_712
    assert n_params(student.encoder) == n_params(teacher.encoder) == 11_027_968
    assert round(100 * (1 - 38_239_589 / 106_761_665), 1) == 64.2  # the abstract's claim


@pytest.mark.parametrize(
    "options,total,dim",
    [
        ({"drm": False}, 27_211_621 - (1536 - 384) * 768, 10752),
        ({"aggregator": "regional-gem"}, 27_211_621 - 788_996 - 789_504 - 99_712, 10752),
        ({"aggregator": "gem"}, 27_211_621 - 788_996 - 789_504 - 99_712, 768),
        ({"tdda_guidance": False}, 27_211_621 - 768 * 512, 10752),
        ({"adapters": False}, 27_211_621 - 2_295_648, 10752),
        ({"cross_image_encoder": True}, 38_239_589, 10752),
    ],
)
def test_switches_change_exactly_their_part(options, total, dim):
    model = build("d2vpr", **options)
    assert n_params(model) == total
    out = model(torch.rand(2, 3, 168, 168))  # 12x12 patches: the least regional GeM accepts
    assert out.shape == (2, dim) and model.descriptor_dim == dim
    torch.testing.assert_close(out.norm(dim=1), torch.ones(2))
    assert model.batch_dependent == options.get("cross_image_encoder", False)


def test_variants_by_name_equal_variants_by_override():
    a = build("d2vpr-encoder")
    b = build("d2vpr", cross_image_encoder=True)
    assert a.options == b.options and a.batch_dependent and b.batch_dependent
    assert build("cricavpr-noencoder").encoder is None


def d2vpr_official_keys():
    """Key names of the released D²-VPR checkpoints, written from the official module tree."""
    keys = ["backbone.cls_token", "backbone.pos_embed", "backbone.mask_token"]
    keys += ["backbone.patch_embed.proj.weight", "backbone.patch_embed.proj.bias"]

    def conv(p):
        return [f"{p}.conv.weight", f"{p}.conv.bias"] + [
            f"{p}.bn.{s}"
            for s in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
        ]

    for i in range(12):
        b = f"backbone.blocks.{i}"
        for part in ("norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2"):
            keys += [f"{b}.{part}.weight", f"{b}.{part}.bias"]
        keys += [f"{b}.ls1.gamma", f"{b}.ls2.gamma"]
        a = f"{b}.adapter"
        keys += conv(f"{a}.branch1") + conv(f"{a}.branch2.0") + conv(f"{a}.branch2.1")
        keys += conv(f"{a}.branch3.0") + conv(f"{a}.branch3.1")
        keys += [f"{a}.D_fc1.weight", f"{a}.D_fc1.bias", f"{a}.D_fc2.weight", f"{a}.D_fc2.bias"]
    wb = lambda p: [f"{p}.weight", f"{p}.bias"]  # noqa: E731
    keys += wb("backbone.up_norm") + wb("backbone.lin") + ["aggregation.1.p"]
    keys += wb("offset_generator.0") + wb("offset_generator.2")
    for mlp in ("small_to_medium", "medium_to_global"):
        keys += (
            wb(f"topdown_fusion.{mlp}.0")
            + wb(f"topdown_fusion.{mlp}.1")
            + wb(f"topdown_fusion.{mlp}.4")
        )
    keys += wb("pos_encoder.fc.0") + wb("pos_encoder.fc.2")
    return keys


def encoder_keys():
    keys = []
    for i in range(2):
        layer = f"encoder.layers.{i}"
        keys += [f"{layer}.self_attn.in_proj_weight", f"{layer}.self_attn.in_proj_bias"]
        for part in ("self_attn.out_proj", "linear1", "linear2", "norm1", "norm2"):
            keys += [f"{layer}.{part}.weight", f"{layer}.{part}.bias"]
    return keys


def official_checkpoint(model, keys, seed=3):
    """Random tensors under the official names, shaped as our model's matching parameters."""
    own = model.state_dict()
    mapped = {k: map_official_keys({k: None}).popitem()[0] for k in keys}
    assert set(mapped.values()) == set(own), "official key list and model disagree"
    g = torch.Generator().manual_seed(seed)
    state = {}
    for k in keys:
        ref = own[mapped[k]]
        if ref.dtype == torch.long:
            state[k] = torch.tensor(7)
        elif k.endswith("running_var"):
            state[k] = torch.rand(ref.shape, generator=g) + 0.5
        else:
            state[k] = torch.randn(ref.shape, generator=g) * 0.02
    return state


@pytest.mark.parametrize(
    "name,extra",
    [("d2vpr", []), ("d2vpr-encoder", "encoder")],
    ids=["finetune_no_encoder.pth", "finetune.pth/distillation.pth"],
)
def test_official_d2vpr_checkpoints_load_strictly(tmp_path, name, extra):
    keys = d2vpr_official_keys() + (encoder_keys() if extra else [])
    model = build(name)
    state = official_checkpoint(model, keys)
    assert state["backbone.lin.weight"].shape == (768, 1536)
    assert state["offset_generator.0.weight"].shape == (512, 1536, 1, 1)
    assert state["backbone.blocks.0.adapter.branch3.1.conv.weight"].shape == (48, 12, 5, 5)
    path = tmp_path / "released.pth"
    # as released: DataParallel prefixes inside a dict with model_state_dict
    torch.save({"model_state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 9}, path)
    loaded = build(name, weights=str(path))
    assert loaded.weights_info.kind == "full" and not loaded.weights_info.random_init
    torch.testing.assert_close(loaded.drm.lin.weight, state["backbone.lin.weight"])
    torch.testing.assert_close(loaded.aggregator.aggregation[1].p, state["aggregation.1.p"])
    torch.testing.assert_close(
        loaded.backbone.blocks[5].adapter.branch1.bn.running_var,
        state["backbone.blocks.5.adapter.branch1.bn.running_var"],
    )
    # a released no-encoder file into the encoder model: the error names what is missing
    if not extra:
        with pytest.raises(VPRBenchError, match=r"24 missing key\(s\): encoder.layers.0"):
            build("d2vpr-encoder", weights=str(path))


def test_official_cricavpr_checkpoint_loads_strictly(tmp_path):
    model = build("cricavpr")
    keys = [
        k
        for k in d2vpr_official_keys()
        if k.startswith("backbone.") and ".lin." not in k and "up_norm" not in k
    ]
    keys += ["backbone.norm.weight", "backbone.norm.bias", "aggregation.1.p"] + encoder_keys()
    state = official_checkpoint(model, keys)
    assert state["backbone.blocks.0.adapter.D_fc1.weight"].shape == (384, 768)
    assert state["backbone.blocks.0.adapter.branch2.1.conv.weight"].shape == (96, 24, 3, 3)
    path = tmp_path / "CricaVPR.pth"
    torch.save({"model_state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    loaded = build("cricavpr", weights=str(path))
    torch.testing.assert_close(loaded.backbone.norm.weight, state["backbone.norm.weight"])
    torch.testing.assert_close(
        loaded.encoder.layers[1].self_attn.in_proj_weight,
        state["encoder.layers.1.self_attn.in_proj_weight"],
    )


@pytest.mark.parametrize("name,arch", [("d2vpr", "vits14"), ("cricavpr", "vitb14")])
def test_dinov2_pretrain_initialises_the_backbone(tmp_path, name, arch):
    torch.manual_seed(5)
    dinov2 = {k: torch.randn_like(v) for k, v in DINOv2ViT(arch).state_dict().items()}
    path = tmp_path / f"dinov2_{arch}_pretrain.pth"
    torch.save(dinov2, path)
    with pytest.warns(UserWarning, match="only the backbone was initialised"):
        model = create_model(name, weights=str(path))
    assert model.weights_info.kind == "backbone-init"
    torch.testing.assert_close(
        model.backbone.blocks[11].mlp.fc2.weight, dinov2["blocks.11.mlp.fc2.weight"]
    )
    torch.testing.assert_close(model.backbone.pos_embed, dinov2["pos_embed"])
    # adapters keep the official initialisation: D_fc2 zero, convs 1e-5
    assert model.backbone.blocks[0].adapter.D_fc2.weight.abs().sum() == 0
    assert torch.all(model.backbone.blocks[0].adapter.branch1.conv.weight == 1e-5)
    wrong = "vitb14" if arch == "vits14" else "vits14"
    torch.save({k: torch.zeros_like(v) for k, v in DINOv2ViT(wrong).state_dict().items()}, path)
    with pytest.raises(VPRBenchError, match="wrong shape"):
        create_model(name, weights=str(path))


def test_position_embeddings_interpolate_as_the_official_code():
    vit = DINOv2ViT("vits14")
    pos = vit.interpolate_pos_encoding((16, 16))
    grid = vit.pos_embed[:, 1:].reshape(1, 37, 37, 384).permute(0, 3, 1, 2)
    expected = F.interpolate(grid, scale_factor=(16.1 / 37, 16.1 / 37), mode="bicubic")
    torch.testing.assert_close(pos[:, 1:], expected.permute(0, 2, 3, 1).reshape(1, 256, 384))
    torch.testing.assert_close(pos[:, :1], vit.pos_embed[:, :1])
    plain = F.interpolate(grid, size=(16, 16), mode="bicubic", antialias=True)
    assert not torch.allclose(expected, plain, atol=1e-4)  # why the official formula matters
    assert vit.interpolate_pos_encoding((37, 37)) is vit.pos_embed


def test_tdda_offsets_once_equals_per_region_and_saves_flops():
    torch.manual_seed(0)
    tdda = TDDA().eval()
    for p in tdda.parameters():
        p.data.normal_(0, 0.05)
    cls, patches = torch.randn(2, 768), torch.randn(2, 768, 16, 16)
    once = tdda(cls, patches)
    flops_once = (
        FlopCountAnalysis(tdda, (cls[:1], patches[:1])).unsupported_ops_warnings(False).total()
    )
    tdda.recompute_offsets_per_region = True
    official = tdda(cls, patches)
    flops_official = (
        FlopCountAnalysis(tdda, (cls[:1], patches[:1])).unsupported_ops_warnings(False).total()
    )
    torch.testing.assert_close(once, official, atol=1e-6, rtol=0)
    generator_macs = 256 * (1536 * 512 + 512 * 4)  # both 1x1 convs over the 16x16 map
    assert flops_official - flops_once == 12 * generator_macs


def test_tdda_quirks_hand_computed():
    tdda = TDDA()
    roi, size = (0.0, 0.0, 0.5, 0.5), (8, 8)
    zero = torch.zeros(1, 4, 16, 16)
    points = tdda.deform(zero, roi, size)
    # zero offsets: scale 0.5 + 1.5 * sigmoid(0) = 1.25 about the centre 0.25, then clamped to [0, 1]
    xs = points[0, 0, :, 0]
    unclamped = 0.25 + 1.25 * (torch.linspace(0, 0.5, 8) - 0.25)
    expected = torch.clamp(unclamped, 0, 1)
    torch.testing.assert_close(xs, expected)
    torch.testing.assert_close(
        tdda.box(points)[0], torch.tensor([0.2578125, 0.2578125, 0.5625, 0.5625])
    )
    # the offset map is read at the region's [0, 1] coordinates taken as grid_sample's [-1, 1]:
    # the top-left region reads the centre-to-bottom-right part of the map (columns/rows >= 7.5).
    top_left_only = zero.clone()
    top_left_only[:, 0, :7, :7] = 0.2
    torch.testing.assert_close(tdda.deform(top_left_only, roi, size), points)
    bottom_right = zero.clone()
    bottom_right[:, 0, 7:, 7:] = 0.2
    shifted = tdda.deform(bottom_right, roi, size)
    torch.testing.assert_close(
        shifted[..., 0], torch.clamp(unclamped + 0.2 * 0.5, 0, 1).expand(8, 8)[None]
    )
    # offsets are clamped to +/-0.25 of the region size
    huge = zero.clone()
    huge[:, 1] = 5.0
    ys = tdda.deform(huge, roi, size)[0, :, 0, 1]
    torch.testing.assert_close(ys, torch.clamp(unclamped + 0.25 * 0.5, 0, 1))


def test_cross_image_encoder_makes_descriptors_batch_dependent():
    x = torch.rand(3, 3, 168, 168)
    for name in ("cricavpr", "d2vpr-encoder"):
        model = build(name)
        for layer in model.encoder.layers:  # give the encoder a visible effect at random init
            layer.self_attn.out_proj.weight.data.normal_(0, 0.5)
        a = model(x[[0, 1]])[0]
        b = model(x[[0, 2]])[0]
        assert not torch.allclose(a, b, atol=1e-4), name
        # order within a batch does not matter (no position across images)
        perm = model(x[[2, 0, 1]])
        torch.testing.assert_close(perm[[1, 2, 0]], model(x), atol=1e-5, rtol=0)
    model = build("d2vpr")
    torch.testing.assert_close(model(x[[0, 1]])[0], model(x[[0, 2]])[0], atol=1e-5, rtol=0)


def test_small_inputs_and_errors():
    model = build("d2vpr", aggregator="regional-gem")
    with pytest.raises(VPRBenchError, match="at least 12x12 patches"):
        model(torch.rand(1, 3, 154, 154))
    with pytest.raises(VPRBenchError, match="multiple of 14"):
        build("d2vpr")(torch.rand(1, 3, 50, 50))
    with pytest.raises(VPRBenchError, match="option .aggregator. must be one of"):
        build("d2vpr", aggregator="netvlad")


@pytest.mark.parametrize("grid", [16, 23, 32])  # 224, 322 and 448 pixels
def test_regional_gem_slices_like_official_cricavpr_at_every_size(grid):
    from vprbench.models.aggregators import RegionalGeM

    torch.manual_seed(grid)
    cls, patches = torch.randn(2, 768), torch.randn(2, 768, grid, grid)
    pool = RegionalGeM()
    agg = pool.aggregation
    # CricaVPR network.py:61-64, indices as written there
    x_p = patches
    official = [
        cls,
        agg(x_p[:, :, 0:8, 0:8]), agg(x_p[:, :, 0:8, 8:]), agg(x_p[:, :, 8:, 0:8]), agg(x_p[:, :, 8:, 8:]),
        agg(x_p[:, :, 0:5, 0:5]), agg(x_p[:, :, 0:5, 5:11]), agg(x_p[:, :, 0:5, 11:]),
        agg(x_p[:, :, 5:11, 0:5]), agg(x_p[:, :, 5:11, 5:11]), agg(x_p[:, :, 5:11, 11:]),
        agg(x_p[:, :, 11:, 0:5]), agg(x_p[:, :, 11:, 5:11]), agg(x_p[:, :, 11:, 11:]),
    ]  # fmt: skip
    torch.testing.assert_close(pool(cls, patches), torch.stack(official, dim=1), rtol=0, atol=0)


def test_drm_levels_choose_the_blocks_the_drm_reads():
    model = build("d2vpr", drm_levels=[8, 12])
    assert model.drm.levels == (8, 12) and n_params(model) == 27_211_621 - (1536 - 768) * 768
    out = model(torch.rand(1, 3, 56, 56))
    assert out.shape == (1, 10752)
    with pytest.raises(VPRBenchError, match="drm_levels must be increasing block numbers"):
        build("d2vpr", drm_levels=[12, 8])
    with pytest.raises(VPRBenchError, match="drm=false reads only block 12"):
        build("d2vpr", drm=False, drm_levels=[8, 12])
