"""Training as released: in-city batches, RandAugment's interpolation, each stage's cities, checks that
run before training, what the resume key holds, and a damaged metrics file."""

import json
from pathlib import Path

import numpy as np
import pytest

from vprbench.errors import VPRBenchError
from vprbench.train.gsv import RELEASED_DISTILL_CITIES, PlaceBatchSampler


def _cities(sizes_per_city):
    """places (image lists) and each place's city index, for cities of the given place sizes."""
    places, city_of = [], []
    for c, sizes in enumerate(sizes_per_city):
        for p, n in enumerate(sizes):
            places.append([f"c{c}p{p}i{i}" for i in range(n)])
            city_of.append(c)
    return places, city_of


def _batch_cities(sampler, city_of):
    return [{city_of[p] for p, _, _ in batch} for batch in sampler]


def test_in_city_batches_keep_cities_together_in_their_order():
    rng = np.random.default_rng(0)
    places, city_of = _cities([rng.integers(4, 9, 43).tolist() for _ in range(5)])  # 215 places
    in_city = PlaceBatchSampler(places, 8, 4, seed=3, cities=city_of, batching="in-city")
    order = in_city.order()
    # each city's places are consecutive, cities in their listed order
    assert [city_of[p] for p in order] == sorted(city_of)
    sets = _batch_cities(in_city, city_of)
    single = np.mean([len(s) == 1 for s in sets])
    assert single >= 0.8 and max(len(s) for s in sets) == 2  # only batches at a city's end mix
    glob = _batch_cities(PlaceBatchSampler(places, 8, 4, seed=3, cities=city_of), city_of)
    assert np.mean([len(s) == 1 for s in glob]) < 0.05  # what vprbench did before
    # in-city re-shuffles every epoch; in-city-fixed keeps its batches (only the K images change)
    again = PlaceBatchSampler(places, 8, 4, seed=3, epoch=1, cities=city_of, batching="in-city")
    assert not np.array_equal(again.order(), order)
    fixed = [PlaceBatchSampler(places, 8, 4, seed=3, epoch=e, cities=city_of,
                               batching="in-city-fixed") for e in (0, 1)]  # fmt: skip
    assert np.array_equal(fixed[0].order(), fixed[1].order())
    assert list(fixed[0]) != list(fixed[1])  # other images and augmentation seeds
    # deterministic, and two ranks together see the single process's batch
    assert list(
        PlaceBatchSampler(places, 8, 4, seed=3, cities=city_of, batching="in-city")
    ) == list(in_city)
    ranks = [list(PlaceBatchSampler(places, 8, 4, seed=3, rank=r, world_size=2, cities=city_of,
                                    batching="in-city")) for r in (0, 1)]  # fmt: skip
    assert [a + b for a, b in zip(*ranks, strict=True)] == list(in_city)
    with pytest.raises(VPRBenchError, match="--batching in-city needs the city of every place"):
        PlaceBatchSampler(places, 8, 4, seed=3, batching="in-city")


def test_a_city_orders_its_places_by_first_appearance_among_shuffled_images():
    """As pd.unique over a shuffled dataframe: a place of 8 images comes before one of 4 with
    probability 8/12 (the first of 12 shuffled images is one of its 8), not 1/2."""
    places, city_of = _cities([[8, 4]])
    first = [PlaceBatchSampler(places, 2, 4, seed=s, cities=city_of, batching="in-city").order()[0]
             for s in range(3000)]  # fmt: skip
    assert np.mean(np.array(first) == 0) == pytest.approx(8 / 12, abs=0.025)


def test_randaugment_interpolates_bilinearly_in_both_stages():
    from torchvision.transforms import InterpolationMode, RandAugment

    from vprbench.train.gsv import train_transform

    for stage, magnitude in (("distill", 9), ("finetune", 15)):
        steps = train_transform(stage, (224, 224), (0.5,) * 3, (0.5,) * 3).transforms
        (rand,) = [t for t in steps if isinstance(t, RandAugment)]
        assert rand.interpolation == InterpolationMode.BILINEAR and rand.magnitude == magnitude


def test_each_stage_reads_its_released_cities(tmp_path):
    from vprbench.train import config_from
    from vprbench.train.config import stage_cities

    frames = tmp_path / "gsv" / "Dataframes"
    frames.mkdir(parents=True)
    for city in (*RELEASED_DISTILL_CITIES, "Zurich"):
        (frames / f"{city}.csv").write_text("place_id\n")
    distill = config_from("distill", data=str(tmp_path / "gsv"), out="x")
    cities, why = stage_cities(distill)
    assert cities == list(RELEASED_DISTILL_CITIES) and len(cities) == 23 and "23 cities" in why
    assert stage_cities(config_from("finetune", data=str(tmp_path / "gsv"), out="x"))[0] is None
    (frames / "Rome.csv").unlink()
    cities, why = stage_cities(distill)
    assert cities is None and "1 missing, e.g. Rome" in why
    assert stage_cities(config_from("distill", data="x", out="x", cities=["Rome"]))[0] == ["Rome"]
    assert config_from("distill", data="x", out="x").batching == "in-city-fixed"
    assert config_from("finetune", data="x", out="x").batching == "in-city"


def test_best_metric_and_validation_sets_are_checked_before_training(tmp_path, isolated_dirs):
    from vprbench.datasets.manage import ensure_sample
    from vprbench.datasets.protocols import load_registry
    from vprbench.paths import data_root
    from vprbench.train import config_from, train

    ensure_sample(data_root(), load_registry())
    out = tmp_path / "run"
    config = config_from("finetune", model="dinov2-gem", data="nordland-train-sample", out=str(out),
                         image_size=(28, 28), places_per_batch=4, val=["nordland-sample"],
                         best_metric="r@1", max_steps=1)  # fmt: skip
    with pytest.raises(VPRBenchError, match=r"--best-metric 'r@1': validation on nordland-sample "
                                            r"\(the first --val\) reports R@1, R@5, R@10, R@20"):  # fmt: skip
        train(config)
    assert not out.exists()  # nothing trained, nothing written
    config.val, config.best_metric = ["nope"], "R@1"
    with pytest.raises(VPRBenchError, match="nope"):
        train(config)


def test_settings_that_do_not_change_the_weights_are_not_in_the_resume_key():
    from vprbench.train import config_from
    from vprbench.train.config import same_run

    a = config_from("finetune", data="x", out="a", best_metric="R@1", val=["pitts30k-val"])
    b = config_from("finetune", data="x", out="b", best_metric="R@5", val=["msls-val"],
                    val_every_steps=100, workers=4, checkpoint_every=7)  # fmt: skip
    assert a.resume_key() == b.resume_key()
    assert config_from("finetune", data="x", out="a", lr=1e-4).resume_key() != a.resume_key()
    # the data by content: the embedded set by name or by its path is one run
    from vprbench.train.gsv import embedded_train_sample

    named = config_from("finetune", data="nordland-train-sample", out="a").resume_key()
    by_path = config_from("finetune", data=str(embedded_train_sample()), out="a").resume_key()
    assert named == by_path and named["data"] != a.resume_key()["data"]
    assert same_run(named, by_path, Path("last.pth"))
    # a checkpoint of an older format (global batches, nearest RandAugment) is not resumed
    old = {k: v for k, v in named.items() if k != "format"}
    with pytest.raises(VPRBenchError, match=r"last.pth: made by an older vprbench"):
        same_run(old, named, Path("last.pth"))


def test_a_cut_short_last_metrics_line_is_dropped_and_a_bad_middle_one_named(tmp_path):
    from vprbench.train.loop import _truncate_metrics

    path = tmp_path / "metrics.jsonl"
    good = [json.dumps({"step": s, "loss": 1.0}) for s in (1, 2, 3)]
    path.write_text("\n".join(good) + '\n{"step": 4, "epoch": 0, "ba')
    _truncate_metrics(path, 2)
    assert path.read_text() == good[0] + "\n" + good[1] + "\n"
    path.write_text(good[0] + "\nnot json\n" + good[1] + "\n")
    with pytest.raises(VPRBenchError, match=r"metrics.jsonl:2: not a JSON line"):
        _truncate_metrics(path, 5)


RECIPE = """name: r
base:
  model: d2vpr
  protocols: [nordland-sample]
  image_size: [56, 112]
  train:
    data: nordland-train-sample
    distill: {{teacher: cricavpr, allow_random_teacher: true}}
    finetune: {finetune}
variants:
  - name: TDDA
{extra}"""


def _recipe(tmp_path, finetune="{}", extra=""):
    from vprbench.ablate.recipe import load_recipe

    path = tmp_path / "r.yaml"
    path.write_text(RECIPE.format(finetune=finetune, extra=extra))
    return load_recipe(path)


def test_a_variant_that_cannot_be_distilled_is_refused_when_the_recipe_is_read(tmp_path):
    from vprbench.ablate.variants import expand
    from vprbench.models import create_model
    from vprbench.models.registry import get_card, resolve_options

    with pytest.raises(VPRBenchError, match=r"r.yaml:\d+: variant 'GeM': distillation matches "
                       r"descriptors element-wise, but teacher 'cricavpr' gives 10752-d and this "
                       r"student 768-d"):  # fmt: skip
        _recipe(tmp_path, extra="  - name: GeM\n    options: {aggregator: gem}\n")
    # fine-tuning only is fine, and the card's size rule is the built model's
    recipe = _recipe(tmp_path, extra="  - name: GeM\n    options: {aggregator: gem}\n"
                                     "    train: {distill: false}\n")  # fmt: skip
    assert [v.name for v in expand(recipe)] == ["TDDA", "GeM"]
    card = get_card("d2vpr")
    for aggregator in ("gem", "tdda", "regional-gem"):
        options = resolve_options(card, {"aggregator": aggregator})
        model = create_model("d2vpr", aggregator=aggregator)
        assert card.dim_for(options) == model.descriptor_dim


def test_stage_settings_are_typed_and_checked_again_after_set(tmp_path):
    from vprbench.ablate.variants import expand

    recipe = _recipe(tmp_path, finetune="{lr: 2e-4, milestones: [10, 20]}")
    (variant,) = expand(recipe)
    assert variant.train["finetune"]["lr"] == 2e-4  # PyYAML reads 2e-4 as a string
    for bad, message in (("{epochs: ten}", r"r.yaml:9: 'epochs' must be a positive integer, got 'ten'"),
                         ('{warmup_as_released: "no"}', r"'warmup_as_released' must be true or false"),
                         ("{batching: city}", r"'batching' must be in-city, in-city-fixed or global"),
                         ("{milestones: [ten]}", r"'milestones' must be a list of epochs")):  # fmt: skip
        with pytest.raises(VPRBenchError, match=message):
            _recipe(tmp_path, finetune=bad)
    for dotted, value, message in (
        ("train.finetune.lrr", 1e-4, r"--set: variant 'TDDA': .*unknown key 'lrr'"),
        ("train.distill", True, r"--set: variant 'TDDA': .*'distill' is a mapping"),
        ("train.finetune.lr", "fast", r"--set: variant 'TDDA': .*'lr' must be a positive number"),
        ("train.finetune.lr", -1e-3, r"'lr' must be a positive number, got -0.001"),
        ("train.finetune.epochs", 0, r"'epochs' must be a positive integer, got 0"),
    ):
        with pytest.raises(VPRBenchError, match=message):
            expand(recipe, {dotted: value})
    (fast,) = expand(recipe, {"train.finetune.lr": "1e-3"})
    assert fast.train["finetune"]["lr"] == 1e-3
    # --set on a stage that is off (or a variant without training) leaves it off
    off = _recipe(tmp_path, extra="  - name: distill only\n    train: {finetune: false}\n"
                                  "  - name: untrained\n    train: null\n    weights: w.pth\n")  # fmt: skip
    short = {v.name: v.train for v in expand(off, {"train.finetune.max_steps": 2})}
    assert short["TDDA"]["finetune"]["max_steps"] == 2
    assert short["distill only"]["finetune"] is False and short["untrained"] is None


def test_stage_keys_hold_what_changes_the_weights_and_nothing_else(tmp_path):
    import shutil

    from vprbench.ablate.run import training_plan
    from vprbench.ablate.variants import expand
    from vprbench.train.gsv import embedded_train_sample

    results = tmp_path / "results"
    (base,) = expand(_recipe(tmp_path))
    distill, finetune = training_plan(base, results)
    assert (distill.config["dtype"], finetune.config["dtype"]) == ("fp32", "fp32")
    (cuda,) = expand(_recipe(tmp_path), {"device": "cuda"})
    assert [p.config["dtype"] for p in training_plan(cuda, results)] == ["fp32", "fp16"]
    # bookkeeping does not retrain: workers, checkpoints, validation
    (busy,) = expand(_recipe(tmp_path, finetune="{workers: 2, checkpoint_every: 5, val: [sped]}"))
    assert [p.folder.name for p in training_plan(busy, results)] == [distill.folder.name,
                                                                      finetune.folder.name]  # fmt: skip
    # another --results-dir (the distilled student's path) keeps the fine-tuning key
    assert training_plan(base, Path("rel"))[1].folder.name == finetune.folder.name
    (other,) = expand(_recipe(tmp_path, finetune="{lr: 1e-4}"))
    assert training_plan(other, results)[1].folder.name != finetune.folder.name
    # the content of the data and of the initial weights, not their paths
    data = tmp_path / "gsv"
    shutil.copytree(embedded_train_sample(), data)
    (copy,) = expand(_recipe(tmp_path), {"train.data": str(data)})
    assert training_plan(copy, results)[0].folder.name == distill.folder.name
    csv = next((data / "Dataframes").glob("*.csv"))
    csv.write_text(csv.read_text() + csv.read_text().splitlines()[-1] + "\n")
    assert training_plan(copy, results)[0].folder.name != distill.folder.name
    weights = tmp_path / "init.pth"
    weights.write_bytes(b"one")
    (init,) = expand(_recipe(tmp_path), {"train.init": str(weights)})
    first = training_plan(init, results)[0].folder.name
    weights.write_bytes(b"two")
    assert training_plan(init, results)[0].folder.name != first


def test_each_process_resumes_its_own_random_state():
    import random

    import torch

    from vprbench.train.checkpoint import gather_rng_states, rng_state, set_rng_state

    torch.manual_seed(1)
    random.seed(1)
    first = rng_state()
    torch.rand(3)  # rank 1 has drawn more than rank 0
    random.random()
    second = rng_state()
    saved = {"ranks": [first, second]}
    torch.manual_seed(99)
    set_rng_state(saved, rank=1, world=2)
    after_one = (torch.rand(2), random.random())
    set_rng_state(second)
    assert torch.equal(after_one[0], torch.rand(2)) and after_one[1] == random.random()
    set_rng_state(saved, rank=0, world=2)
    zero = torch.rand(2)
    set_rng_state(first)
    assert torch.equal(zero, torch.rand(2))
    with pytest.raises(VPRBenchError, match="random states of 2 processes: resume with as many"):
        set_rng_state(saved, rank=0, world=4)
    with pytest.raises(VPRBenchError, match="random states of 1 process: resume it in one process"):
        set_rng_state(first, rank=0, world=2)
    assert set(gather_rng_states(torch.device("cpu"), 1)) == {"torch", "python"}


def test_torchrun_with_validation_finishes_and_validates_like_one_process(tmp_path, isolated_dirs):
    """Two gloo processes, validating every 2 steps and at the end: every rank takes part in the
    shared extraction, rank 0 scores; the run writes last.pth and summary.json, and its validations
    agree with one process's (before, it crashed or hung at the first validation)."""
    import os
    import subprocess
    import sys

    from tests.test_train import _cli, _train_args, make_gsv
    from vprbench.datasets.manage import ensure_sample
    from vprbench.datasets.protocols import load_registry
    from vprbench.paths import data_root

    ensure_sample(data_root(), load_registry())
    make_gsv(tmp_path / "gsv", places=8)
    extra = ["--val", "nordland-sample", "--val-every-steps", "2", "--best-metric", "R@5"]
    single = _cli([*_train_args(tmp_path, "one", 3), *extra])
    assert single.returncode == 0, single.stderr[-3000:]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                "--standalone", "-m", "vprbench", *_train_args(tmp_path, "two", 3), *extra]  # fmt: skip
    double = subprocess.run(torchrun, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    assert double.returncode == 0, double.stderr[-3000:]

    def validations(run):
        lines = [json.loads(x) for x in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
        return [(x["step"], x["val"]) for x in lines if "val" in x]

    assert [step for step, _ in validations("two")] == [2, 3]  # every 2 steps and after the last
    # the weights agree up to the float rounding of averaged gradients, so a near-tie may flip: the
    # recalls agree within 2 of the 600 queries
    for (_, two), (_, one) in zip(validations("two"), validations("one"), strict=True):
        for k, value in one["nordland-sample"].items():
            assert abs(two["nordland-sample"][k] - value) <= 2 / 600 + 1e-12, k
    for name in ("last.pth", "best.pth", "summary.json"):
        assert (tmp_path / "two" / name).is_file()
    assert not list((tmp_path / "two").glob(".validation-*"))  # the shared folder is removed


def test_two_gloo_processes_distil_like_one_with_a_batch_dependent_teacher_and_batchnorm(tmp_path):
    """CricaVPR's cross-image encoder attends across the batch and the d2vpr student's adapters hold
    BatchNorm: with the teacher on the gathered global batch and SyncBatchNorm, 2 processes follow
    1 process's loss curve (before, each rank's teacher saw its half and BN normalised per rank)."""
    import os
    import subprocess
    import sys

    from tests.test_train import _cli, _losses, make_gsv

    make_gsv(tmp_path / "gsv", places=8)

    def args(out):
        return ["train", "distill", "--teacher", "cricavpr", "--allow-random-teacher", "--student",
                "d2vpr", "--data", str(tmp_path / "gsv"), "--out", str(tmp_path / out),
                "--image-size", "168", "168", "--places-per-batch", "4", "--images-per-place", "2",
                "--max-steps", "3", "--lr", "1e-3", "--augment", "none",
                # regional GeM: TDDA's dropout draws its masks per process, which no split can match
                "--set", "aggregator=regional-gem"]  # fmt: skip

    single = _cli(args("one"))
    assert single.returncode == 0, single.stderr[-3000:]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                "--standalone", "-m", "vprbench", *args("two")]  # fmt: skip
    double = subprocess.run(torchrun, capture_output=True, text=True, timeout=900,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    assert double.returncode == 0, double.stderr[-3000:]
    np.testing.assert_allclose(_losses(tmp_path / "two"), _losses(tmp_path / "one"), rtol=1e-4)
    # a batch-dependent student cannot be split across processes: refused, not silently different
    encoder = subprocess.run([*torchrun[:-len(args("two"))], *args("three")[:-2], "--set",
                              "cross_image_encoder=true"], capture_output=True, text=True,
                             timeout=900, env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    assert encoder.returncode != 0 and "is batch-dependent" in encoder.stderr


def test_global_batchnorm_is_batchnorm_on_the_whole_batch(monkeypatch):
    """In one process with the all-reduce an identity, GlobalBatchNorm2d must be BatchNorm2d: the
    same output, input and weight gradients and running statistics (momentum 0.1 and None), and
    finite in fp16 on a channel of 65,536 values (fp16 sums overflow there)."""
    import torch

    from vprbench.train.stages import GlobalBatchNorm2d, global_batchnorm

    monkeypatch.setattr(torch.distributed, "is_available", lambda: True)
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda group=None: 2)
    monkeypatch.setattr(torch.distributed, "all_reduce", lambda tensor, *a, **k: None)
    # an earlier test may have switched gradients off globally: on here, as it was after
    previous = torch.is_grad_enabled()
    torch.set_grad_enabled(True)
    try:
        for momentum in (0.1, None):
            torch.manual_seed(0)
            plain = torch.nn.BatchNorm2d(5, eps=1e-3, momentum=momentum)
            with torch.no_grad():
                plain.weight.uniform_(0.5, 1.5)
                plain.bias.uniform_(-1, 1)
            wrapped = torch.nn.Sequential(torch.nn.BatchNorm2d(5, eps=1e-3, momentum=momentum))
            wrapped[0].load_state_dict(plain.state_dict())
            global_batchnorm(wrapped)
            assert type(wrapped[0]) is GlobalBatchNorm2d
            for _ in range(3):
                x = (torch.randn(6, 5, 4, 4) * 3 + 10).requires_grad_(True)
                xg = x.detach().clone().requires_grad_(True)
                y, yg = plain(x), wrapped(xg)
                torch.testing.assert_close(yg, y, rtol=1e-5, atol=1e-5)
                (y * torch.arange(y.numel()).view_as(y)).sum().backward()
                (yg * torch.arange(yg.numel()).view_as(yg)).sum().backward()
                torch.testing.assert_close(xg.grad, x.grad, rtol=1e-4, atol=1e-4)
            torch.testing.assert_close(
                wrapped[0].weight.grad, plain.weight.grad, rtol=1e-3, atol=1e-3
            )
            torch.testing.assert_close(wrapped[0].running_mean, plain.running_mean)
            torch.testing.assert_close(
                wrapped[0].running_var, plain.running_var, rtol=1e-4, atol=1e-5
            )
            assert int(wrapped[0].num_batches_tracked) == 3
        big = torch.nn.Sequential(torch.nn.BatchNorm2d(2))
        global_batchnorm(big)
        y = big(torch.randn(256, 2, 16, 16).mul(1.5).add(3).half())
        assert y.dtype == torch.float16 and torch.isfinite(y).all() and y.abs().max() > 1
    finally:
        torch.set_grad_enabled(previous)
