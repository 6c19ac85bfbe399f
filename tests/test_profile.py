"""Profiling: FLOPs of a small model worked out by hand, parameter groups, reductions, caching."""

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vprbench.profile.flops import count_flops, flop_analysis, parameter_groups
from vprbench.profile.run import ProfileSettings, profile_model, reductions


class Toy(nn.Module):
    """Every counted operator kind of the real models, on a [1, 3, 4, 4] input."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 2, kernel_size=1, bias=False)
        self.fc = nn.Linear(8, 5, bias=False)

    def forward(self, x):
        a = self.conv(x)  # 2 out x 3 in x 16 positions = 96 MACs
        tokens = x.flatten(2).transpose(1, 2).unsqueeze(1)  # [1, 1, 16, 3]
        b = F.scaled_dot_product_attention(tokens, tokens, tokens)  # 16*16*3 + 16*16*3 = 1536
        grid = torch.zeros(1, 2, 2, 2)
        c = F.grid_sample(x, grid, align_corners=True)  # 12 outputs x 4 = 48
        d = F.avg_pool2d(a, 4)  # 32 inputs = 32
        e = self.fc(torch.cat([d.flatten(1), d.flatten(1), d.flatten(1), d.flatten(1)], 1))  # 40
        return torch.cat([b.flatten(), c.flatten(), e.flatten()])


def test_flops_of_a_small_model_worked_out_by_hand():
    report = count_flops(Toy(), (4, 4))
    assert report.macs_per_image == 96 + 1536 + 48 + 32 + 40
    assert report.by_group == {"conv": 96.0, "fc": 40.0}
    assert "aten::scaled_dot_product_attention" not in report.not_counted
    assert "aten::grid_sampler" not in report.not_counted
    # per image: a batch of 3 counts the same per image
    assert (
        count_flops(nn.Sequential(nn.Conv2d(3, 2, 1, bias=False)), (4, 4), batch=3).macs_per_image
        == 96
    )


def test_parameter_groups_split_adapters_from_the_backbone():
    from vprbench.models import create_model

    with pytest.warns(UserWarning):
        model = create_model("d2vpr-encoder")
    groups = parameter_groups(model)
    assert groups == {
        "backbone": 22_055_808,  # ViT-S/14 with mask token, without DINOv2's final norm
        "adapters": 2_295_648,
        "drm": 1_181_952,
        "aggregator": 788_996 + 789_504 + 99_712 + 1,
        "encoder": 11_027_968,
    }
    assert sum(groups.values()) == 38_239_589


def test_cricavpr_trains_only_adapters_in_its_backbone():
    from vprbench.models import create_model

    with pytest.warns(UserWarning):
        model = create_model("cricavpr")
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 20_181_185


def test_reductions_against_a_reference():
    records = [
        {
            "model": "a",
            "params": {"total": 25},
            "flops": {"macs_per_image": 40},
            "latency": {"image_ms_median": 5},
        },
        {
            "model": "b",
            "params": {"total": 100},
            "flops": {"macs_per_image": 100},
            "latency": {"image_ms_median": 20},
        },
    ]
    rows = {r["model"]: r for r in reductions(records, "b")}
    assert (
        rows["a"]["params"] == 0.75 and rows["a"]["flops"] == 0.6 and rows["a"]["latency"] == 0.75
    )
    assert rows["b"]["params"] == 0.0


def test_profile_record_is_cached_by_key(tmp_path):
    settings = ProfileSettings(image_size=(64, 64), warmup=0, repeats=2, threads=1)
    first = profile_model("effnet-lite0-gem", {}, settings, tmp_path)
    assert not first["cached"] and first["params"]["total"] == 4_652_009
    assert first["latency"]["repeats"] == 2 and first["memory"]["peak_mib"] > 0
    assert first["flops"]["gflops_per_image"] == pytest.approx(
        2 * first["flops"]["gmacs_per_image"]
    )
    assert first["threads"] == {"used": 1, "source": "--threads"}
    assert first["load_average"]["cores"] >= 1 and "before" in first["load_average"]
    again = profile_model("effnet-lite0-gem", {}, settings, tmp_path)
    assert again["cached"] and again["latency"] == first["latency"]
    other = profile_model(
        "effnet-lite0-gem",
        {},
        ProfileSettings(image_size=(32, 32), warmup=0, repeats=2, threads=1),
        tmp_path,
    )
    assert (
        not other["cached"] and other["flops"]["macs_per_image"] < first["flops"]["macs_per_image"]
    )
    saved = list((tmp_path / "profiles").glob("effnet-lite0-gem__*.json"))
    assert len(saved) == 2 and json.loads(saved[0].read_text())["model"] == "effnet-lite0-gem"


def test_default_threads_are_the_free_cores(monkeypatch):
    from vprbench.extract import settings as extract_settings
    from vprbench.profile import timing

    monkeypatch.setattr(extract_settings, "available_cpus", lambda: 8)
    for load, free in ((0.1, 8), (2.4, 6), (2.6, 5), (7.9, 1), (30.0, 1)):
        monkeypatch.setattr(timing, "load_average", lambda load=load: load)
        assert timing.free_cores() == (
            free,
            f"{free} of 8 cores free (1-minute load average {load:.2f})",
        )
    monkeypatch.setattr(timing, "load_average", lambda: None)
    assert timing.free_cores() == (8, "8 cores (no load average on this OS)")


def test_busy_machine_and_wide_spread_are_warned():
    from vprbench.profile.timing import timing_warnings

    steady = {"batch_ms_median": 100.0, "batch_ms_p25": 95.0, "batch_ms_p75": 110.0,
              "batch_ms_min": 90.0, "batch_ms_max": 150.0}  # fmt: skip
    assert timing_warnings(steady, threads=1, load=0.9, cores=2) == []
    busy = timing_warnings(steady, threads=2, load=0.9, cores=2)
    assert len(busy) == 1 and busy[0].startswith("the machine was busy: load average 0.90 on 2")
    wide = {**steady, "batch_ms_p75": 130.0}  # (130 - 95) / 100 > 0.25
    assert timing_warnings(wide, 1, None, 2)[0].startswith("wide spread: p25-p75 95.0-130.0 ms")
    outlier = {**steady, "batch_ms_max": 181.0}  # more than twice the fastest run
    assert timing_warnings(outlier, 1, 0.0, 2)[0].startswith("wide spread")


def test_profile_command(capsys, monkeypatch, isolated_dirs):
    from tests.test_cli import run

    code, out, err = run(
        ["profile", "pixels", "effnet-lite0-gem", "--vs", "effnet-lite0-gem", "--image-size", "32", "32",
         "--repeats", "2", "--warmup", "0", "--pca", "16"],
        capsys, monkeypatch,
    )  # fmt: skip
    assert code == 0, err
    assert "pixels vs effnet-lite0-gem:" in out and "GMACs" in out and "no data loading" in out
    assert "effnet-lite0-gem: timed with " in out and " cores free (1-minute load average " in out
    records = [
        json.loads(p.read_text()) for p in (isolated_dirs["results"] / "profiles").glob("*.json")
    ]
    pca = {r["model"]: r["params"]["by_group"]["pca"] for r in records}
    assert pca == {"pixels": 3072 * 16 + 3072, "effnet-lite0-gem": 1280 * 16 + 1280}


def test_profile_record_states_the_tdda_offset_passes(tmp_path):
    settings = ProfileSettings(image_size=(56, 56), warmup=0, repeats=1, threads=1)
    record = profile_model("d2vpr", {}, settings, tmp_path)
    assert record["flops"]["tdda_offset_passes"].startswith("1 per image")
    assert "13 times" in record["flops"]["tdda_offset_passes"]
    gem = profile_model("d2vpr", {"aggregator": "gem"}, settings, tmp_path)
    assert gem["flops"]["tdda_offset_passes"] is None


class Attend(nn.Module):
    """Multi-head self-attention over the 16 pixels of a [B, 3, 4, 4] input, as 8-d tokens."""

    def __init__(self, batch_first):
        super().__init__()
        self.lift = nn.Linear(3, 8, bias=False)  # 16 tokens x 3 x 8 = 384 MACs
        self.mha = nn.MultiheadAttention(8, num_heads=2, batch_first=batch_first)
        self.batch_first = batch_first

    def forward(self, x):
        t = self.lift(x.flatten(2).transpose(1, 2))
        if not self.batch_first:
            t = t.transpose(0, 1)
        return self.mha(t, t, t, need_weights=False)[0]


def test_fused_multi_head_attention_counts_as_the_unfused_one():
    # 16 tokens of 8: q, k, v and output projections 4 x 16 x 64 = 4096, attention 2 x 16 x 16 x 8
    # = 4096 (heads summed), plus the 384 of the lift
    torch.manual_seed(0)
    fused = Attend(batch_first=True).eval()  # nn.MultiheadAttention's inference fast path
    plain = Attend(batch_first=False).eval()
    plain.load_state_dict(fused.state_dict())
    x = torch.rand(2, 3, 4, 4)
    with torch.no_grad():  # the fused operator is what the eval-mode trace holds
        assert "_native_multi_head_attention" in flop_analysis(fused, x).by_operator()
        assert "_native_multi_head_attention" not in flop_analysis(plain, x).by_operator()
    a, b = count_flops(fused, (4, 4), batch=2), count_flops(plain, (4, 4), batch=2)
    assert "aten::_native_multi_head_attention" not in a.not_counted
    assert a.macs_per_image == b.macs_per_image == 384 + 4096 + 4096


class Branches(nn.Module):
    """A used conv (frozen, as a trained backbone may be), a used head, a branch never run (its two
    layers wholly unused) and a stray parameter, like DINOv2's pre-training mask token."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)
        self.head = nn.Linear(4, 2)
        self.local = nn.Sequential(nn.Conv2d(4, 2, 1), nn.Conv2d(2, 2, 1))
        self.token = nn.Parameter(torch.zeros(5))
        self.conv.requires_grad_(False)

    def forward(self, x):
        return self.head(self.conv(x).mean((2, 3)))


def test_unused_parameters_are_those_no_descriptor_depends_on():
    from vprbench.models import create_model
    from vprbench.profile.flops import unused_parameters

    model = Branches()
    assert unused_parameters(model, (4, 4)) == {"local": (8 + 2) + (4 + 2), "token": 5}
    assert not model.conv.weight.requires_grad and model.head.weight.requires_grad  # restored
    assert all(p.grad is None for p in model.parameters())
    with pytest.warns(UserWarning, match="RANDOM INIT"):
        boq = create_model("boq-dinov2")
    # BoQ reads DINOv2's last block without its final norm; the mask token is pre-training only
    assert unused_parameters(boq, (322, 322)) == {"backbone.dino.mask_token": 768,
                                                  "backbone.dino.norm": 1536}  # fmt: skip


def test_profile_reports_the_rerank_cost(capsys, monkeypatch, isolated_dirs):
    """``profile --rerank``: the local features' bytes per image (exact), their forward and the
    matching of one query's top-k timed, in the record, its key and the printed line."""
    from tests.test_cli import run
    from vprbench import rerank
    from vprbench.rerank import patchnetvlad as pnv

    # Patch-NetVLAD's rapid spatial scoring over a 64 x 96 image: 4 x 6 conv5_3, 3 x 5 patches of 2
    small = pnv.PatchConfig("test", (2,), (1,), (1.0,), "spatialApproximator", image_size=(64, 96))
    rerank.register_reranker(rerank.patchnetvlad_reranker("test-pnv", "netvlad-pca128", small, 128))
    try:
        args = [
            "profile",
            "netvlad-pca128",
            "--image-size",
            "64",
            "96",
            "--repeats",
            "1",
            "--warmup",
            "0",
            "--rerank",
            "test-pnv",
            "--rerank-k",
            "3",
            "--rerank-repeats",
            "2",
        ]
        code, out, err = run(args, capsys, monkeypatch)  # fmt: skip
        assert code == 0, err
        (path,) = (isolated_dirs["results"] / "profiles").glob("*.json")
        record = json.loads(path.read_text())
        rr = record["rerank"]
        assert rr["local_bytes_per_image"] == {"fp32": 15 * 128 * 4, "fp16": 15 * 128 * 2}
        assert (rr["k"], rr["local_shape"], rr["matching"]["repeats"]) == (3, [15, 128], 2)
        assert rr["matching"]["score_calls"] == 3  # one candidate a call (Patch-NetVLAD's block)
        assert rr["query_s"] > rr["matching"]["query_s_median"] > 0
        assert record["key"]["rerank"] == "test-pnv" and record["key"]["rerank_k"] == 3
        assert "netvlad-pca128 + re-ranker test-pnv: local features " in out
        assert "7.5 KiB an image in fp32 (3.8 KiB with --store fp16)" in out
        assert "matching the top 3:" in out
        # without --rerank the key has no re-ranking fields: a second profile, measured anew
        code, out, err = run(args[:9], capsys, monkeypatch)
        assert code == 0, err
        assert "netvlad-pca128: measured" in out and "re-ranker" not in out
        assert len(list((isolated_dirs["results"] / "profiles").glob("*.json"))) == 2
        # a re-ranker of a model not profiled; local features of the wrong size
        code, _, err = run(["profile", "pixels", "--rerank", "selavpr"], capsys, monkeypatch)
        assert code != 0 and "matches the local features of 'selavpr': profile that model" in err
        small = ["profile", "netvlad-pca128", "--repeats", "1", "--warmup", "0", "--rerank",
                 "patchnetvlad-storage", "--image-size"]  # fmt: skip
        code, _, err = run([*small, "64", "96"], capsys, monkeypatch)
        assert code != 0 and "patch sizes (5,) exceed the 4 x 6 feature map of a (64, 96)" in err
        code, _, err = run([*small, "96", "128"], capsys, monkeypatch)  # 2 x 4 patches of 5
        assert code != 0 and "have 1,024 values; the re-ranker matches (936, 128) (119,808)" in err
    finally:
        rerank.RERANKERS.pop("test-pnv")
