"""Training: GSV-Cities reading, the P x K sampler, both losses, schedules, checkpoints into extract,
resume after SIGKILL, two gloo processes, and learning on the embedded nordland-train-sample."""

import json
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import torch

from tests.test_formatters import touch_image
from vprbench.errors import VPRBenchError
from vprbench.train import config_from, train
from vprbench.train.gsv import PlaceBatchSampler, image_name, read_gsv_places
from vprbench.train.schedule import Schedule
from vprbench.train.stages import DistillLoss, MultiSimilarity, select_trainable


def make_gsv(root, cities=("paris", "rome"), places=6, images=4, short=1):
    """A GSV-Cities folder: ``places`` places of ``images`` images per city, plus ``short`` places
    with 2 images (dropped at K=4)."""
    (root / "Dataframes").mkdir(parents=True)
    for c, city in enumerate(cities):
        rows = []
        for place in range(places + short):
            n = images if place < places else 2
            for i in range(n):
                rows.append({"place_id": place, "year": 2018, "month": i + 1, "northdeg": 90 * i,
                             "city_id": city, "lat": 48.85 + place / 1000, "lon": 2.35, "panoid": f"p{c}{place}{i}"})  # fmt: skip
        df = pd.DataFrame(rows)
        df.to_csv(root / "Dataframes" / f"{city}.csv", index=False)
        for row in df.itertuples():
            touch_image(
                root / "Images" / city / image_name(row), (row.place_id * 37 + row.month) % 256
            )
    return root


def test_gsv_layout_names_counts_and_errors(tmp_path):
    root = make_gsv(tmp_path / "gsv")
    data = read_gsv_places(root, min_images=4)
    assert len(data.places) == 12 and data.dropped == 2 and data.num_images == 48
    assert data.place_ids[0] == "paris/0" and data.place_ids[6] == "rome/0"
    assert data.places[0][0] == "Images/paris/paris_0000000_2018_01_000_48.85_2.35_p000.jpg"
    assert len(read_gsv_places(root, ["rome"]).places) == 6
    with pytest.raises(VPRBenchError, match=r"no csv for cities \['oslo'\]"):
        read_gsv_places(root, ["oslo"])
    with pytest.raises(VPRBenchError, match="not a GSV-Cities folder"):
        read_gsv_places(tmp_path)
    with pytest.raises(VPRBenchError, match="rome.csv: no place with at least 5 images"):
        read_gsv_places(root, ["rome"], min_images=5)
    (
        root
        / "Images"
        / "rome"
        / image_name(next(pd.read_csv(root / "Dataframes" / "rome.csv").itertuples()))
    ).unlink()
    with pytest.raises(VPRBenchError, match=r"1 image\(s\) listed in Dataframes/ are missing"):
        read_gsv_places(root)
    pd.DataFrame({"place_id": [1]}).to_csv(root / "Dataframes" / "paris.csv", index=False)
    with pytest.raises(VPRBenchError, match=r"paris.csv: missing column\(s\) \['year'"):
        read_gsv_places(root)


def test_sampler_covers_every_place_once_and_shards_exactly():
    places = [[f"{p}-{i}" for i in range(5)] for p in range(10)]
    sampler = PlaceBatchSampler(places, 4, 3, seed=1, epoch=0)
    batches = list(sampler)
    assert len(batches) == 2 == sampler.batches_per_epoch  # 10 // 4, the last 2 places dropped
    seen = [p for b in batches for p, _, _ in b]
    assert len(seen) == 24 and len(set(seen)) == 8
    for b in batches:
        for place in {p for p, _, _ in b}:
            chosen = [i for p, i, _ in b if p == place]
            assert len(chosen) == 3 == len(set(chosen))
    assert list(PlaceBatchSampler(places, 4, 3, seed=1, epoch=0)) == batches  # deterministic
    assert list(PlaceBatchSampler(places, 4, 3, seed=1, epoch=1)) != batches
    assert list(PlaceBatchSampler(places, 4, 3, seed=1, start_batch=1)) == batches[1:]
    ranks = [list(PlaceBatchSampler(places, 4, 3, seed=1, rank=r, world_size=2)) for r in (0, 1)]
    assert [a + b for a, b in zip(*ranks, strict=True)] == batches
    with pytest.raises(VPRBenchError, match="--images-per-place 6: 10 place"):
        PlaceBatchSampler(places, 4, 6, seed=1)
    with pytest.raises(VPRBenchError, match="exceeds the 10 usable places"):
        PlaceBatchSampler(places, 12, 2, seed=1)


def test_distillation_loss_is_the_mse_of_descriptors():
    class Fixed(torch.nn.Module):
        def __init__(self, out):
            super().__init__()
            self.out = out

        def forward(self, x):
            return self.out

    teacher = Fixed(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    student = Fixed(torch.tensor([[0.6, 0.8], [0.0, 1.0]]))
    # (0.4^2 + 0.8^2 + 0 + 0) / 4 elements
    assert DistillLoss(teacher)(student, None, None).item() == pytest.approx(0.2)
    # cosine: (1 - 0.6) and (1 - 1), mean 0.2
    assert DistillLoss(teacher, "cosine")(student, None, None).item() == pytest.approx(0.2)


def test_multisimilarity_loss_as_released_worked_out_by_hand():
    ms = MultiSimilarity(distributed=False)
    assert (ms.loss.alpha, ms.loss.beta, ms.loss.base, ms.miner.epsilon) == (1, 50, 0, 0.1)
    emb = torch.nn.functional.normalize(
        torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [0.6, 0.8]]), dim=1
    )
    labels = torch.tensor([0, 0, 1, 1])
    sim = emb @ emb.T
    # MS loss on all pairs: per anchor 1/a log(1 + sum_pos e^{-a(S-b)}) + 1/B log(1 + sum_neg e^{B(S-b)})
    expected = 0.0
    for i in range(4):
        pos = [sim[i, j] for j in range(4) if j != i and labels[j] == labels[i]]
        neg = [sim[i, j] for j in range(4) if labels[j] != labels[i]]
        expected += math.log(1 + sum(math.exp(-s) for s in pos))
        expected += math.log(1 + sum(math.exp(50 * s) for s in neg)) / 50
    expected /= 4
    assert ms.loss(emb, labels).item() == pytest.approx(expected, rel=1e-5)


def test_schedules_fixed_and_as_released():
    fixed = Schedule(2e-4, (10, 20, 30), 0.1, warmup_steps=3900)
    assert fixed.lr_at(0, 0, 100) == pytest.approx(2e-4 / 3900)
    assert fixed.lr_at(3899, 38, 100) == pytest.approx(2e-4 * 0.1**3)  # warm by now, decayed
    assert fixed.lr_at(1949, 5, 100) == pytest.approx(1e-4)
    assert fixed.lr_at(10_000, 15, 100) == pytest.approx(2e-5)
    released = Schedule(2e-4, (10, 20, 30), 0.1, warmup_steps=3900, warmup_as_released=True)
    # 120 epochs of 100 steps: still on the 3,900-epoch ramp, no decay
    assert released.lr_at(11_999, 119, 100) == pytest.approx(2e-4 * 12_000 / 390_000)
    assert released.lr_at(11_999, 119, 100) == pytest.approx(6.15e-6, rel=1e-3)
    assert Schedule(2.5e-5).lr_at(5000, 19, 100) == 2.5e-5
    assert "3900 epochs" in released.describe() and "iterations" in fixed.describe()


def test_d2vpr_finetunes_the_released_parameters():
    from vprbench.models import create_model

    model = create_model("d2vpr")
    assert select_trainable(model, "finetune") == (10_726_309, 27_211_621)
    assert select_trainable(model, "distill") == (27_211_621, 27_211_621)
    encoder = create_model("d2vpr-encoder")
    assert select_trainable(encoder, "finetune") == (21_754_277, 38_239_589)


def _tiny(tmp_path, out="run", **extra):
    values = dict(model="dinov2-gem", options={"backbone": "vits14"}, data=str(tmp_path / "gsv"),
                  out=str(tmp_path / out), image_size=(28, 28), places_per_batch=4,
                  images_per_place=2, epochs=1, lr=1e-3, warmup_steps=0, augment="none")  # fmt: skip
    values.update(extra)
    return values


def test_checkpoint_round_trip_into_extract(tmp_path):
    from tests.conftest import make_vpr_bench_folder
    from vprbench.datasets.formatted import load_formatted
    from vprbench.datasets.manage import import_dataset
    from vprbench.datasets.protocols import load_registry
    from vprbench.extract.run import extract
    from vprbench.extract.settings import ExtractSettings
    from vprbench.models import create_model
    from vprbench.paths import cache_root, data_root

    make_gsv(tmp_path / "gsv")
    make_vpr_bench_folder(tmp_path / "val", 6, [[0], [1], [2]])
    import_dataset(tmp_path / "val", "vpr-bench", "val", data_root(), load_registry())
    summary = train(config_from("finetune", **_tiny(tmp_path, val=["val"], max_steps=2)))
    assert summary["steps"] == 2 and summary["best"]["dataset"] == "val"
    out = tmp_path / "run"
    assert {p.name for p in out.iterdir()} == {
        "config.json",
        "metrics.jsonl",
        "last.pth",
        "best.pth",
        "summary.json",
    }
    config = json.loads((out / "config.json").read_text())
    assert (
        config["config"]["options"] == {"backbone": "vits14"} and config["parameters"]["total"] > 0
    )
    steps = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [s["step"] for s in steps if "loss" in s] == [1, 2] and all(
        "lr" in s for s in steps if "loss" in s
    )
    # the checkpoint loads by --weights, with the options it was trained with
    ds = load_formatted("val", data_root())
    settings = ExtractSettings(model="dinov2-gem", weights=str(out / "last.pth"),
                               overrides={"backbone": "vits14"}, image_size=(28, 28))  # fmt: skip
    result = extract(ds, settings, cache_root())
    trained = create_model("dinov2-gem", weights=str(out / "last.pth"), backbone="vits14")
    state = torch.load(out / "last.pth", weights_only=True)["model_state_dict"]
    assert all(torch.equal(trained.state_dict()[k], v) for k, v in state.items())
    assert result.descriptors.database.shape == (6, 384)
    with pytest.raises(
        VPRBenchError, match=r"trained with other options: backbone='vits14' \(given 'vitb14'\)"
    ):
        create_model("dinov2-gem", weights=str(out / "last.pth"), backbone="vitb14")
    with pytest.raises(VPRBenchError, match="a checkpoint of model 'dinov2-gem', not 'd2vpr'"):
        create_model("d2vpr", weights=str(out / "last.pth"))


def test_distill_refuses_a_random_teacher_and_runs_with_the_flag(tmp_path):
    make_gsv(tmp_path / "gsv")
    values = _tiny(tmp_path, model="d2vpr", options={"aggregator": "gem"}, teacher="dinov2-gem",
                   teacher_options={"backbone": "vitb14"}, max_steps=2)  # fmt: skip
    with pytest.raises(VPRBenchError, match="--allow-random-teacher"):
        train(config_from("distill", **values))
    assert not (tmp_path / "run").exists()  # nothing half-written
    summary = train(config_from("distill", **values, allow_random_teacher=True))
    assert (
        summary["random_teacher"] is True
        and summary["parameters"]["trainable"] == summary["parameters"]["total"]
    )
    meta = torch.load(tmp_path / "run" / "last.pth", weights_only=True)["vprbench"]
    assert meta["random_teacher"] is True and meta["stage"] == "distill"
    losses = [
        json.loads(line)["loss"]
        for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    ]
    assert len(losses) == 2 and all(np.isfinite(losses))


def _losses(run) -> list[float]:
    """The loss of every step logged in a run's metrics.jsonl."""
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [json.loads(x)["loss"] for x in lines if "loss" in json.loads(x)]


def _cli(args, env=None):
    return subprocess.run([sys.executable, "-m", "vprbench", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=600)  # fmt: skip


def _train_args(tmp_path, out, steps):
    return ["train", "finetune", "--model", "dinov2-gem", "--set", "backbone=vits14", "--data",
            str(tmp_path / "gsv"), "--out", str(tmp_path / out), "--image-size", "28", "28",
            "--places-per-batch", "4", "--images-per-place", "2", "--epochs", "3", "--max-steps",
            str(steps), "--lr", "1e-3", "--warmup-steps", "2", "--checkpoint-every", "1"]  # fmt: skip


def test_resume_after_sigkill_ends_with_the_same_weights(tmp_path):
    make_gsv(tmp_path / "gsv")
    args = _train_args(tmp_path, "killed", 7)  # 3 batches per epoch: the kill lands mid-epoch
    env = {"VPRBENCH_FAULT_SLEEP_PER_STEP": "0.5"}
    proc = subprocess.Popen([sys.executable, "-m", "vprbench", *args], env={**os.environ, **env},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    last = tmp_path / "killed" / "last.pth"
    deadline = time.time() + 300
    while time.time() < deadline:
        if last.is_file() and torch.load(last, weights_only=True)["vprbench"]["step"] >= 4:
            break
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed = torch.load(last, weights_only=True)
    killed_at = killed["vprbench"]
    assert 4 <= killed_at["step"] < 7 and killed_at["batch"] != 0
    assert {"optimizer_state_dict", "scaler_state_dict", "rng"} <= set(killed)  # can still resume
    assert not (tmp_path / "killed" / "summary.json").exists()  # does not read as finished
    resumed = _cli([*args, "--resume"])
    assert resumed.returncode == 0, resumed.stderr
    clean = _cli(_train_args(tmp_path, "clean", 7))
    assert clean.returncode == 0, clean.stderr
    a = torch.load(tmp_path / "killed" / "last.pth", weights_only=True)
    b = torch.load(tmp_path / "clean" / "last.pth", weights_only=True)
    assert a["vprbench"]["step"] == b["vprbench"]["step"] == 7
    for key, value in b["model_state_dict"].items():
        assert torch.equal(a["model_state_dict"][key], value), key
    loss = lambda run: _losses(tmp_path / run)  # noqa: E731
    assert loss("killed") == loss("clean")
    # a finished run keeps its weights, not the optimiser state (Adam: twice the weights)
    assert b["finished"] is True and not {"optimizer_state_dict", "scaler_state_dict", "rng"} & set(
        b
    )
    weights = sum(v.numel() * v.element_size() for v in b["model_state_dict"].values())
    assert (tmp_path / "clean" / "last.pth").stat().st_size < 1.1 * weights + 100_000
    assert killed_at and last.stat().st_size < 1.1 * weights + 100_000
    # and a --resume of the finished run has nothing to do: same weights, same metrics
    before = (tmp_path / "clean" / "metrics.jsonl").read_text()
    again = _cli([*_train_args(tmp_path, "clean", 7), "--resume"])
    assert again.returncode == 0, again.stderr
    c = torch.load(tmp_path / "clean" / "last.pth", weights_only=True)
    assert all(torch.equal(c["model_state_dict"][k], v) for k, v in b["model_state_dict"].items())
    assert (tmp_path / "clean" / "metrics.jsonl").read_text() == before
    # resuming with other options is refused
    other = _cli([*_train_args(tmp_path, "clean", 9), "--resume"])
    assert other.returncode == 1 and "another configuration" in other.stderr


def test_bad_input_is_one_line_and_leaves_nothing(tmp_path):
    make_gsv(tmp_path / "gsv")
    bad = _cli([*_train_args(tmp_path, "a", 2)[:-2], "--init", str(tmp_path / "missing.pth")])
    assert bad.returncode == 1 and "missing.pth: weights file not found" in bad.stderr
    assert "Traceback" not in bad.stderr and not (tmp_path / "a").exists()
    big_k = _train_args(tmp_path, "b", 2)
    big_k[big_k.index("--images-per-place") + 1] = "9"
    bad = _cli(big_k)
    assert bad.returncode == 1 and "no place with at least 9 images" in bad.stderr
    assert not (tmp_path / "b").exists()


def test_two_gloo_processes_follow_the_single_process_loss_curve(tmp_path):
    make_gsv(tmp_path / "gsv", places=8)
    single = _cli(_train_args(tmp_path, "one", 4))
    assert single.returncode == 0, single.stderr
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                "--standalone", "-m", "vprbench", *_train_args(tmp_path, "two", 4)]  # fmt: skip
    double = subprocess.run(torchrun, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    assert double.returncode == 0, double.stderr[-3000:]
    loss = lambda run: _losses(tmp_path / run)  # noqa: E731
    # the same global batch of 4 places x 2 images, split 2 + 2 across the ranks: the gathered
    # MultiSimilarity loss and the averaged gradients give the same curve up to float rounding
    np.testing.assert_allclose(loss("two"), loss("one"), rtol=1e-4, atol=1e-5)
    assert json.loads((tmp_path / "two" / "config.json").read_text())["machine"]["world_size"] == 2


def test_finetuning_on_the_embedded_nordland_sample_lowers_the_loss(tmp_path):
    # The CI-sized version of the README's real-data run: effnet-lite0-gem (ImageNet) on
    # nordland-train-sample; the mean loss of the last steps is below that of the first steps.
    summary = train(config_from("finetune", model="effnet-lite0-gem", data="nordland-train-sample",
                                out=str(tmp_path / "nordland"), image_size=(64, 128), places_per_batch=16,
                                epochs=3, lr=2e-4, warmup_steps=0, augment="none"))  # fmt: skip
    losses = [
        json.loads(x)["loss"]
        for x in (tmp_path / "nordland" / "metrics.jsonl").read_text().splitlines()
    ]
    assert summary["steps"] == 36 == len(losses)
    # measured: 1.518 -> 1.474 (in-city batches); 2 epochs fell by 0.022-0.031, too close to call
    assert np.mean(losses[-6:]) < np.mean(losses[:6]) - 0.02
