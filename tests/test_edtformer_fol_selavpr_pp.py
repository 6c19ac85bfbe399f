"""EDTformer, FoL and SelaVPR++: exact sizes, the released key lists (from the official module
structure, never downloaded) loading strictly from DataParallel ``model_state_dict`` files, and
each new part against the official formula written out by hand: EDTformer's adapter chain and SA_CA
decoder, FoL's attention-guided dust bin, SelaVPR++'s MultiConv adapter chain."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.official_keys import as_numpy1_pickle, count, dinov2_keys, random_state
from vprbench.errors import VPRBenchError
from vprbench.models import create_model, get_card
from vprbench.models.card import weights_target


def build(name: str, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return create_model(name, **kw)


def mha_keys(prefix: str, d: int) -> dict[str, tuple]:
    return {prefix + "in_proj_weight": (3 * d, d), prefix + "in_proj_bias": (3 * d,),
            prefix + "out_proj.weight": (d, d), prefix + "out_proj.bias": (d,)}  # fmt: skip


def edtformer_keys() -> dict[str, tuple]:
    """network.py VPRNet: backbone (vit_base with ``adapters``: 12 SideAdapter(768, 4)), fc,
    decoder = nn.TransformerDecoder(SA_CA(768, 16), num_layers=2), queries, channel_proj, row_proj."""
    keys = dinov2_keys("backbone.", mask_token=True, norm=True)
    for i in range(12):
        a = f"backbone.adapters.{i}."
        keys.update({a + "D_fc1.weight": (4, 768), a + "D_fc1.bias": (4,),
                     a + "D_fc2.weight": (768, 4), a + "D_fc2.bias": (768,)})  # fmt: skip
    keys.update({"fc.weight": (768, 768), "fc.bias": (768,)})
    for i in range(2):
        layer = f"decoder.layers.{i}."
        keys.update(mha_keys(layer + "self_attn.", 768))
        keys.update(mha_keys(layer + "multihead_attn.", 768))
        for norm in ("norm1", "norm2"):
            keys.update({f"{layer}{norm}.weight": (768,), f"{layer}{norm}.bias": (768,)})
    keys.update({"queries": (1, 64, 768), "channel_proj.weight": (256, 768),
                 "channel_proj.bias": (256,), "row_proj.weight": (16, 64), "row_proj.bias": (16,)})  # fmt: skip
    return keys


def fol_keys(arch: str) -> dict[str, tuple]:
    """network_FoL.py FoLNet: backbone.model (the hub DINOv2), aggregator = FoL(C, 64, 128, 256)
    (no dust-bin parameter), upconv (C -> 256), upconv2 (256 -> 128)."""
    c = {"vitb14": 768, "vitl14": 1024}[arch]
    keys = dinov2_keys("backbone.model.", mask_token=True, norm=True, arch=arch)
    a = "aggregator."
    keys.update({
        a + "token_features.0.weight": (512, c), a + "token_features.0.bias": (512,),
        a + "token_features.2.weight": (256, 512), a + "token_features.2.bias": (256,),
        a + "cluster_features.0.weight": (512, c, 1, 1), a + "cluster_features.0.bias": (512,),
        a + "cluster_features.3.weight": (128, 512, 1, 1), a + "cluster_features.3.bias": (128,),
        a + "score.0.weight": (512, c, 1, 1), a + "score.0.bias": (512,),
        a + "score.3.weight": (64, 512, 1, 1), a + "score.3.bias": (64,),
        "upconv.weight": (c, 256, 3, 3), "upconv.bias": (256,),
        "upconv2.weight": (256, 128, 3, 3), "upconv2.bias": (128,),
    })  # fmt: skip
    return keys


def conv_bn_keys(prefix: str, cin: int, cout: int, k: int) -> dict[str, tuple]:
    bn = prefix + "bn."
    return {prefix + "conv.weight": (cout, cin, k, k), prefix + "conv.bias": (cout,),
            bn + "weight": (cout,), bn + "bias": (cout,), bn + "running_mean": (cout,),
            bn + "running_var": (cout,), bn + "num_batches_tracked": ()}  # fmt: skip


def selavpr_pp_keys(arch: str) -> dict[str, tuple]:
    """model/network.py GeoLocalizationNet(hashing=False, aggregation gem): backbone (with
    ``adapters``: MulConvAdapter(768, 384, 192, 24, 96, 24, 96) x 12 for ViT-B,
    MulConvAdapter(1024, 512, 256, 32, 128, 32, 128) x 16 for ViT-L), aggregation.1.p, linear1,
    linear2 (2,048 / 4,096)."""
    c, n, out = {"vitb14": (768, 12, 2048), "vitl14": (1024, 16, 4096)}[arch]
    keys = dinov2_keys("backbone.", mask_token=True, norm=True, arch=arch)
    for i in range(n):
        a = f"backbone.adapters.{i}."
        keys.update(conv_bn_keys(a + "branch1.", c // 2, c // 4, 1))
        keys.update(conv_bn_keys(a + "branch2.0.", c // 2, c // 32, 1))
        keys.update(conv_bn_keys(a + "branch2.1.", c // 32, c // 8, 3))
        keys.update(conv_bn_keys(a + "branch3.0.", c // 2, c // 32, 1))
        keys.update(conv_bn_keys(a + "branch3.1.", c // 32, c // 8, 5))
        keys.update({a + "D_fc1.weight": (c // 2, c), a + "D_fc1.bias": (c // 2,),
                     a + "D_fc2.weight": (c, c // 2), a + "D_fc2.bias": (c,)})  # fmt: skip
    keys.update({"aggregation.1.p": (1,), "linear1.weight": (c, c), "linear1.bias": (c,),
                 "linear2.weight": (out, c), "linear2.bias": (out,)})  # fmt: skip
    return keys


OFFICIAL = {  # name: (key list, parameters, descriptor size, input, released file)
    "edtformer": (edtformer_keys, 96_956_736, 4096, (322, 322), "EDTformer.pth"),
    "fol": (lambda: fol_keys("vitl14"), 308_827_456, 8448, (504, 504), "FoL_large.pth"),
    "fol-base": (lambda: fol_keys("vitb14"), 90_056_256, 8448, (322, 322), "FoL_base.pth"),
    "selavpr++": (lambda: selavpr_pp_keys("vitl14"), 331_295_745, 4096, (322, 322),
                  "SelaVPRplusplus_large.pth"),
    "selavpr++-base": (lambda: selavpr_pp_keys("vitb14"), 97_899_201, 2048, (322, 322),
                       "SelaVPRplusplus_base.pth"),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(OFFICIAL))
def test_sizes_cards_and_released_keys(name, tmp_path):
    keys_of, params, dim, size, file = OFFICIAL[name]
    keys = keys_of()
    model, card = build(name), get_card(name)
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == keys
    buffers = sum(b.numel() for b in model.buffers())
    assert sum(p.numel() for p in model.parameters()) == params == count(keys) - buffers
    assert model.descriptor_dim == card.descriptor_dim == dim and card.image_size == size
    assert card.resize == "normalised" and not card.antialias  # torchvision 0.15 tensor resize
    assert card.licence and card.protocol and card.reference and card.pipeline_source
    assert weights_target(card, "official")[0].endswith("/" + file)
    # the released layout: model_state_dict of a DataParallel model, beside training state saved
    # under numpy 1.x (EDTformer pins numpy 1.22)
    state = random_state(keys, seed=3)
    checkpoint = {"model_state_dict": {f"module.{k}": v for k, v in state.items()},
                  "epoch_num": 9, "best_r5": np.float64(97.1), "not_improved_num": 2}  # fmt: skip
    torch.save(checkpoint, tmp_path / "numpy2.pth")
    as_numpy1_pickle(tmp_path / "numpy2.pth", tmp_path / file)
    loaded = build(name, weights=str(tmp_path / file))
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in state.items())
    assert loaded.weights_info.kind == "full" and not loaded.weights_info.random_init
    state.pop(next(iter(k for k in keys if "adapters" in k or "aggregator" in k)))
    torch.save({"model_state_dict": state}, tmp_path / "short.pth")
    with pytest.raises(VPRBenchError, match="1 missing key"):
        build(name, weights=str(tmp_path / "short.pth"))


def vit_blocks(vit, x):
    """The official token preparation and the blocks one by one (the blocks themselves are tested
    against DINOv2 elsewhere): yields the tokens before the blocks and after each one."""
    grid = (x.shape[-2] // 14, x.shape[-1] // 14)
    tokens = vit.patch_embed(x)
    tokens = torch.cat([vit.cls_token.expand(x.shape[0], -1, -1), tokens], 1)
    tokens = tokens + vit.interpolate_pos_encoding(grid)
    yield tokens
    for block in vit.blocks:
        tokens = block(tokens, grid)
        yield tokens


def attention(x, mem, w, b, wo, bo, heads):
    """nn.MultiheadAttention's arithmetic: in-projection, per-head softmax(q k^T / sqrt(d)) v,
    out-projection."""
    d = x.shape[-1]
    q = x @ w[:d].T + b[:d]
    k = mem @ w[d : 2 * d].T + b[d : 2 * d]
    v = mem @ w[2 * d :].T + b[2 * d :]
    split = lambda t: t.reshape(t.shape[0], t.shape[1], heads, d // heads).transpose(1, 2)  # noqa: E731
    q, k, v = split(q), split(k), split(v)
    weights = (q @ k.transpose(-2, -1) / math.sqrt(d // heads)).softmax(-1)
    out = (weights @ v).transpose(1, 2).reshape(x.shape)
    return out @ wo.T + bo


def test_edtformer_is_the_official_formula():
    torch.manual_seed(0)
    model = build("edtformer").eval()
    s = {k: v.detach() for k, v in model.state_dict().items()}
    x = torch.rand(2, 3, 56, 70)
    with torch.no_grad():
        steps = list(vit_blocks(model.backbone, x))
        y = steps[0].clone()  # forward_features: y = adapters[i](y + blk(x)), the blocks unchanged
        for i, after in enumerate(steps[1:]):
            a = f"backbone.adapters.{i}."
            z = y + after
            y = z + 0.5 * F.linear(F.gelu(F.linear(z, s[a + "D_fc1.weight"], s[a + "D_fc1.bias"])),
                                   s[a + "D_fc2.weight"], s[a + "D_fc2.bias"])  # fmt: skip
        y = F.layer_norm(y, (768,), s["backbone.norm.weight"], s["backbone.norm.bias"], eps=1e-6)
        memory = F.linear(y, s["fc.weight"], s["fc.bias"])
        q = s["queries"].expand(2, -1, -1)
        for i in range(2):  # SA_CA, norm_first False: no feed-forward
            p = f"decoder.layers.{i}."
            sa = attention(q, q, *(s[p + "self_attn." + k] for k in
                                   ("in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias")),
                           heads=16)  # fmt: skip
            q = F.layer_norm(q + sa, (768,), s[p + "norm1.weight"], s[p + "norm1.bias"])
            ca = attention(q, memory, *(s[p + "multihead_attn." + k] for k in
                                        ("in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias")),
                           heads=16)  # fmt: skip
            q = F.layer_norm(q + ca, (768,), s[p + "norm2.weight"], s[p + "norm2.bias"])
        out = F.linear(q, s["channel_proj.weight"], s["channel_proj.bias"])  # [B, 64, 256]
        out = F.linear(
            out.permute(0, 2, 1), s["row_proj.weight"], s["row_proj.bias"]
        )  # [B, 256, 16]
        torch.testing.assert_close(
            model(x), F.normalize(out.flatten(1), dim=-1), rtol=1e-4, atol=1e-5
        )


def log_optimal_transport(scores, alpha, iters):
    """aggregators/FoL.py log_optimal_transport, written out: the dust-bin row is ``alpha`` [B, N]."""
    b, m, n = scores.shape
    couplings = torch.cat([scores, alpha.unsqueeze(1)], 1)
    norm = -torch.log(torch.tensor(float(m + n)))
    log_mu = torch.cat([norm.expand(m), torch.log(torch.tensor(float(n - m)))[None] + norm])
    log_mu, log_nu = log_mu[None].expand(b, -1), norm.expand(n)[None].expand(b, -1)
    u, v = torch.zeros_like(log_mu), torch.zeros_like(log_nu)
    for _ in range(iters):
        u = log_mu - torch.logsumexp(couplings + v.unsqueeze(1), dim=2)
        v = log_nu - torch.logsumexp(couplings + u.unsqueeze(2), dim=1)
    return couplings + u.unsqueeze(2) + v.unsqueeze(1) - norm


def test_fol_global_descriptor_is_the_official_formula():
    torch.manual_seed(0)
    model = build("fol-base").eval()
    vit, agg = model.backbone.model, model.aggregator
    with torch.no_grad():  # a larger qkv spread, so that some attention weights fall below 0.01
        vit.blocks[-1].attn.qkv.weight.mul_(6.0)
    x = torch.rand(2, 3, 126, 126)  # 81 patches: more than the 64 clusters
    with torch.no_grad():
        steps = list(vit_blocks(vit, x))
        before, last = steps[-2], steps[-1]
        blk = vit.blocks[-1]  # dinov2_FoL.py: i == 3 of the last four blocks
        y = blk.norm1(before)
        b, n, c = y.shape
        qkv = blk.attn.qkv(y).reshape(b, n, 3, 12, c // 12).permute(2, 0, 3, 1, 4)
        att = ((qkv[0] @ qkv[1].transpose(-2, -1)) * (c // 12) ** -0.5).softmax(dim=-1)
        mask1 = att[:, :, 0, 1:].sum(dim=1)
        mask_guide = torch.where(mask1 >= 0.01, mask1, torch.zeros_like(mask1))
        assert 0 < (mask_guide == 0).sum() < mask_guide.numel()  # the floor is exercised
        tokens = vit.norm(last)
        fmap = tokens[:, 1:].reshape(b, 9, 9, c).permute(0, 3, 1, 2)
        f = agg.cluster_features(fmap).flatten(2)
        p = agg.score(fmap).flatten(2)
        t = agg.token_features(tokens[:, 0])
        p = torch.exp(log_optimal_transport(p, 1 - mask_guide, 3))[:, :-1, :]
        p = p.unsqueeze(1).repeat(1, 128, 1, 1)
        f = f.unsqueeze(2).repeat(1, 1, 64, 1)
        out = torch.cat([F.normalize(t, p=2, dim=-1),
                         F.normalize((f * p).sum(dim=-1), p=2, dim=1).flatten(1)], dim=-1)  # fmt: skip
        torch.testing.assert_close(model(x), F.normalize(out, p=2, dim=-1), rtol=1e-4, atol=1e-6)


def test_fol_dustbin_floor():
    from vprbench.models.fol import dustbin_scores

    attention = torch.tensor([[0.0, 0.0099, 0.01, 0.5, 1.7]])  # summed over heads: may pass 1
    expected = torch.tensor([[[1.0, 1.0, 0.99, 0.5, -0.7]]])
    torch.testing.assert_close(dustbin_scores(attention), expected)


def multiconv(s, a, x, grid):
    """model/adapter.py MulConvAdapter (skip_connect False) from its weights, BatchNorm in eval."""

    def conv_bn(prefix, t, pad):
        t = F.conv2d(t, s[prefix + "conv.weight"], s[prefix + "conv.bias"], padding=pad)
        t = F.batch_norm(t, s[prefix + "bn.running_mean"], s[prefix + "bn.running_var"],
                         s[prefix + "bn.weight"], s[prefix + "bn.bias"], eps=0.001)  # fmt: skip
        return F.relu(t)

    x0 = F.relu(F.linear(x, s[a + "D_fc1.weight"], s[a + "D_fc1.bias"]))
    b, _, d = x0.shape
    xs = x0[:, 1:].reshape(b, grid, grid, d).permute(0, 3, 1, 2)
    outs = [conv_bn(a + "branch1.", xs, 0),
            conv_bn(a + "branch2.1.", conv_bn(a + "branch2.0.", xs, 0), 1),
            conv_bn(a + "branch3.1.", conv_bn(a + "branch3.0.", xs, 0), 2)]  # fmt: skip
    outs = torch.cat(outs, 1).reshape(b, d, grid * grid).permute(0, 2, 1)
    outs = torch.cat([x0[:, :1], outs], 1) + x0
    return F.linear(outs, s[a + "D_fc2.weight"], s[a + "D_fc2.bias"])


@pytest.mark.parametrize("name", ["selavpr++", "selavpr++-base"])
def test_selavpr_pp_adapter_chain_is_the_official_formula(name, tmp_path):
    torch.manual_seed(0)
    keys = selavpr_pp_keys("vitl14" if name == "selavpr++" else "vitb14")
    torch.save({"model_state_dict": random_state(keys, seed=5)}, tmp_path / "w.pth")
    model = build(name, weights=str(tmp_path / "w.pth")).eval()
    s = {k: v.detach() for k, v in model.state_dict().items()}
    c = model.backbone.embed_dim
    x = torch.rand(2, 3, 56, 56)
    with torch.no_grad():
        steps = list(vit_blocks(model.backbone, x))
        if name == "selavpr++":  # n_blocks 24: y from block index 7, adapters[index - 8] after
            y = steps[8].clone()
            for index in range(8, 24):
                y = y + multiconv(s, f"backbone.adapters.{index - 8}.", y + steps[index + 1], 4)
        else:  # n_blocks 12: y = x.clone(), y += adapters[index](y + x)
            y = steps[0].clone()
            for index in range(12):
                y = y + multiconv(s, f"backbone.adapters.{index}.", y + steps[index + 1], 4)
        y = F.layer_norm(y, (c,), s["backbone.norm.weight"], s["backbone.norm.bias"], eps=1e-6)
        g = F.linear(y[:, 1:].reshape(2, 4, 4, c), s["linear1.weight"], s["linear1.bias"])
        g = F.normalize(g.permute(0, 3, 1, 2), p=2, dim=1)
        pw = s["aggregation.1.p"]
        g = F.avg_pool2d(g.clamp(min=1e-6).pow(pw), (4, 4)).pow(1.0 / pw)[:, :, 0, 0]
        g = F.linear(g, s["linear2.weight"], s["linear2.bias"])
        torch.testing.assert_close(model(x), F.normalize(g, p=2, dim=-1), rtol=1e-4, atol=1e-5)
    with pytest.raises(VPRBenchError, match="square patch map"):
        model(torch.rand(1, 3, 56, 70))


def test_side_chain_refuses_intermediate_outputs():
    from vprbench.models.vit import DINOv2ViT

    with pytest.raises(VPRBenchError, match="side chain must be one of"):
        DINOv2ViT("vits14", side_chain="ladder")
    vit = DINOv2ViT("vits14", side_chain="edtformer")
    with pytest.raises(VPRBenchError, match="only its last output"):
        vit(torch.rand(1, 3, 28, 28), take=(3,))
