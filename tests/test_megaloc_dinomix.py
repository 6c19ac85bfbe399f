"""MegaLoc, DINO-Mix and CliqueMining: exact sizes, the released key lists loading strictly (built
from the official module structure, never downloaded), each new part against the official formula,
and the released file formats (safetensors; Lightning checkpoints through the safe loader)."""

from __future__ import annotations

import collections
import sys
import types
import warnings

import pytest
import torch
import torch.nn.functional as F

from tests.official_keys import dinov2_keys, random_state
from vprbench.errors import VPRBenchError
from vprbench.models import create_model, get_card
from vprbench.models.card import weights_target
from vprbench.models.weights import read_checkpoint


def build(name: str, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return create_model(name, **kw)


def megaloc_keys() -> dict[str, tuple]:
    """megaloc_model.py: MegaLoc(backbone=DINOv2(), aggregator=Aggregator(agg=FeatureAggregator(768,
    64, 256, 256, 512), linear=Linear(16640, 8448)))."""
    keys = dinov2_keys("backbone.", mask_token=False, norm=True)
    a = "aggregator.agg."
    keys.update({
        a + "token_features.0.weight": (512, 768), a + "token_features.0.bias": (512,),
        a + "token_features.2.weight": (256, 512), a + "token_features.2.bias": (256,),
        a + "cluster_features.0.weight": (512, 768, 1, 1), a + "cluster_features.0.bias": (512,),
        a + "cluster_features.3.weight": (256, 512, 1, 1), a + "cluster_features.3.bias": (256,),
        a + "score.0.weight": (512, 768, 1, 1), a + "score.0.bias": (512,),
        a + "score.3.weight": (64, 512, 1, 1), a + "score.3.bias": (64,), a + "dust_bin": (),
        "aggregator.linear.weight": (8448, 16640), "aggregator.linear.bias": (8448,),
    })  # fmt: skip
    return keys


def dino_mix_keys() -> dict[str, tuple]:
    """hubconf.py dino_mix(): backbone.dino_model (the hub ViT-B/14, norm and head replaced by empty
    Sequentials: no keys) and MixVPR(768, 16, 16, 1024, mix_depth 2, mlp_ratio 1, out_rows 4)."""
    keys = dinov2_keys("backbone.dino_model.", mask_token=True, norm=False)
    for i in range(2):
        m = f"aggregator.mix.{i}.mix."
        keys.update({m + "0.weight": (256,), m + "0.bias": (256,), m + "1.weight": (256, 256),
                     m + "1.bias": (256,), m + "3.weight": (256, 256), m + "3.bias": (256,)})  # fmt: skip
    keys.update({"aggregator.channel_proj.weight": (1024, 768), "aggregator.channel_proj.bias": (1024,),
                 "aggregator.row_proj.weight": (4, 256), "aggregator.row_proj.bias": (4,)})  # fmt: skip
    return keys


def test_exact_sizes_and_cards():
    for name, params, dim, size in (("megaloc", 228_639_553, 8448, (322, 322)),
                                    ("dino-mix", 87_631_620, 4096, (224, 224)),
                                    ("cliquemining", 87_991_489, 8448, (322, 322))):  # fmt: skip
        model, card = build(name), get_card(name)
        assert sum(p.numel() for p in model.parameters()) == params, name
        assert model.descriptor_dim == card.descriptor_dim == dim and card.image_size == size
        assert card.licence and card.protocol and card.reference and card.pipeline_source
    assert get_card("megaloc").resize == "normalised" and get_card("megaloc").antialias
    assert get_card("dino-mix").resize == "normalised" and not get_card("dino-mix").antialias
    assert get_card("cliquemining").resize == "pil" and get_card("cliquemining").dtype == "fp16"
    assert "1af071c" in get_card("megaloc").protocol  # the official commit the card follows
    assert weights_target(get_card("megaloc"), "official")[0] == (
        "https://huggingface.co/gberton/MegaLoc/resolve/main/model.safetensors"
    )
    assert weights_target(get_card("dino-mix"), "official")[0].endswith(
        "/v1.0.0/dinov2_vitb14_mix.ckpt"
    )
    with pytest.raises(VPRBenchError, match="'cliquemining' has no official weights URL"):
        weights_target(get_card("cliquemining"), "official")


def test_megaloc_released_safetensors_load_strictly(tmp_path):
    from safetensors.torch import save_file

    keys = megaloc_keys()
    model = build("megaloc")
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == keys
    state = random_state(keys)
    path = tmp_path / "model.safetensors"
    save_file(state, str(path))
    loaded = build("megaloc", weights=str(path))
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in state.items())
    assert loaded.weights_info.sha256 and not loaded.weights_info.random_init
    missing = dict(state)
    missing.pop("aggregator.linear.bias")
    save_file(missing, str(tmp_path / "short.safetensors"))
    with pytest.raises(VPRBenchError, match="1 missing key"):
        build("megaloc", weights=str(tmp_path / "short.safetensors"))
    (tmp_path / "bad.safetensors").write_bytes((16).to_bytes(8, "little") + b"{not json at all")
    with pytest.raises(VPRBenchError, match="bad.safetensors: not a readable safetensors file"):
        read_checkpoint(tmp_path / "bad.safetensors")


def test_megaloc_forward_is_the_official_formula():
    """MegaLoc.forward by hand: normed tokens, SALAD (256-d clusters and token), linear, L2; and a
    side that is not a multiple of 14 rounded as torchvision's antialiased resize does."""
    import torchvision.transforms.functional as tfm

    from vprbench.models.megaloc import round_to_patches

    torch.manual_seed(0)
    model = build("megaloc").eval()
    x = torch.rand(2, 3, 126, 112)  # 9 x 8 patches: more than the 64 clusters, as SALAD needs
    with torch.no_grad():
        (tokens,), grid = model.backbone(x)
        tokens = model.backbone.norm(tokens)
        feats = tokens[:, 1:].reshape(2, 9, 8, 768).permute(0, 3, 1, 2)
        agg = model.aggregator.agg
        f = agg.cluster_features(feats).flatten(2)  # [B, 256, N]
        p = agg.score(feats).flatten(2)  # [B, 64, N]
        t = agg.token_features(tokens[:, 0])
        b, m, n = p.shape  # SuperGlue's log-space Sinkhorn with a dust bin, 3 iterations
        s = torch.cat([p, agg.dust_bin.expand(b, 1, n)], 1)
        norm = -torch.log(torch.tensor(float(m + n)))
        log_a = torch.cat([norm.expand(m), torch.log(torch.tensor(float(n - m)))[None] + norm])
        log_a, log_b = log_a.expand(b, -1), norm.expand(b, n)
        u, v = torch.zeros_like(log_a), torch.zeros_like(log_b)
        for _ in range(3):
            u = log_a - torch.logsumexp(s + v.unsqueeze(1), dim=2)
            v = log_b - torch.logsumexp(s + u.unsqueeze(2), dim=1)
        plan = torch.exp(s + u.unsqueeze(2) + v.unsqueeze(1) - norm)[:, :-1]
        local = (f.unsqueeze(2) * plan.unsqueeze(1)).sum(-1)  # [B, 256, 64]
        salad = F.normalize(torch.cat([F.normalize(t, dim=-1),
                                       F.normalize(local, dim=1).flatten(1)], -1), dim=-1)  # fmt: skip
        expected = F.normalize(model.aggregator.linear(salad), dim=-1)
        torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-6)
    odd = torch.rand(1, 3, 50, 61)  # 50 / 14 = 3.57 -> 56; 61 / 14 = 4.36 -> 56
    rounded = round_to_patches(odd)
    assert rounded.shape[-2:] == (56, 56)
    torch.testing.assert_close(rounded, tfm.resize(odd, [56, 56], antialias=True))
    assert round_to_patches(x) is x


def test_dino_mix_released_keys_and_the_mixvpr_formula(tmp_path):
    keys = dino_mix_keys()
    model = build("dino-mix")
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == keys
    state = random_state(keys, seed=1)
    checkpoint = tmp_path / "dinov2_vitb14_mix.ckpt"
    torch.save({"state_dict": state, "epoch": 9, "pytorch-lightning_version": "1.8.3"}, checkpoint)
    loaded = build("dino-mix", weights=str(checkpoint)).eval()
    x = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        (tokens,), _ = loaded.backbone.dino_model(x)  # after block 12, no final norm
        fmap = tokens[:, 1:].reshape(2, 16, 16, 768).permute(0, 3, 1, 2).flatten(2)  # [B, 768, 256]
        for i in range(2):  # FeatureMixerLayer: x + Linear(ReLU(Linear(LayerNorm(x))))
            w = {k: state[f"aggregator.mix.{i}.mix.{k}"] for k in
                 ("0.weight", "0.bias", "1.weight", "1.bias", "3.weight", "3.bias")}  # fmt: skip
            h = F.layer_norm(fmap, (256,), w["0.weight"], w["0.bias"], eps=1e-5)
            fmap = fmap + F.linear(F.relu(F.linear(h, w["1.weight"], w["1.bias"])), w["3.weight"],
                                   w["3.bias"])  # fmt: skip
        out = F.linear(fmap.permute(0, 2, 1), state["aggregator.channel_proj.weight"],
                       state["aggregator.channel_proj.bias"]).permute(0, 2, 1)  # fmt: skip
        out = F.linear(out, state["aggregator.row_proj.weight"], state["aggregator.row_proj.bias"])
        torch.testing.assert_close(loaded(x), F.normalize(out.flatten(1), dim=-1))
    with pytest.raises(VPRBenchError, match="16 x 16 patch map"):
        loaded(torch.rand(1, 3, 322, 322))


@pytest.fixture
def fake_lightning():
    """A stand-in for Lightning 1.8's AttributeDict, importable while the checkpoint is written and
    gone when it is read (as on a machine without Lightning)."""

    class AttributeDict(dict):
        pass

    AttributeDict.__module__ = "pytorch_lightning.utilities.parsing"
    AttributeDict.__qualname__ = "AttributeDict"
    names = [
        "pytorch_lightning",
        "pytorch_lightning.utilities",
        "pytorch_lightning.utilities.parsing",
    ]
    for name in names:
        sys.modules[name] = types.ModuleType(name)
    sys.modules[names[-1]].AttributeDict = AttributeDict
    yield AttributeDict
    for name in names:
        sys.modules.pop(name, None)


def test_a_lightning_checkpoint_passes_the_safe_loader(tmp_path, fake_lightning):
    """CliqueMining's release is a Lightning .ckpt: state_dict beside the trainer's state (tensors in
    callbacks, a Counter in a MultiStepLR state, hyper-parameters in an AttributeDict)."""
    model = build("cliquemining")
    state = {k: torch.randn(v.shape) * 0.02 for k, v in model.state_dict().items()}
    ckpt = {"epoch": 3, "global_step": 1200, "pytorch-lightning_version": "2.1.2",
            "state_dict": collections.OrderedDict(state),
            "loops": {"fit_loop": {"state_dict": {}, "epoch_progress": {"total": {"ready": 4}}}},
            "callbacks": {"ModelCheckpoint{'monitor': 'R1'}": {"best_model_score": torch.tensor(0.91),
                                                               "dirpath": "logs/", "best_k_models": {}}},
            "optimizer_states": [{"state": {}, "param_groups": [{"lr": 6e-5, "params": [0, 1]}]}],
            "lr_schedulers": [{"milestones": collections.Counter([5, 10, 15]), "gamma": 0.3}],
            "hparams_name": "kwargs",
            "hyper_parameters": fake_lightning(lr=6e-5, agg_config={"num_clusters": 64})}  # fmt: skip
    path = tmp_path / "cliquemining.ckpt"
    torch.save(ckpt, path)
    sys.modules.pop("pytorch_lightning.utilities.parsing")  # reading needs no Lightning
    loaded = build("cliquemining", weights=str(path))
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in state.items())
    # anything else that a pickle could run is still refused
    torch.save({"state_dict": state, "hook": print}, tmp_path / "evil.ckpt")
    with pytest.raises(
        VPRBenchError, match="evil.ckpt: not a readable PyTorch checkpoint: it holds"
    ):
        read_checkpoint(tmp_path / "evil.ckpt")
