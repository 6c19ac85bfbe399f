"""The command line end to end: quickstart, evaluate on a hand-made dataset, and every bad-input case
(a one-line error and a non-zero exit, nothing half-written)."""

import json
import sys

import h5py
import numpy as np
import pytest
import torch

from tests.conftest import make_vpr_bench_folder
from vprbench.cli import main
from vprbench.models.registry import list_models


def run(argv, capsys, monkeypatch):
    """Run ``vprbench ARGV`` in-process; returns (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["vprbench", *argv])
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = exc.code or 0
    out = capsys.readouterr()
    return code, out.out, out.err


def one_line_error(err: str) -> str:
    """The single error line (progress bars may precede it on stderr); it must come last."""
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], err
    return errors[0]


def test_evaluate_hand_made_dataset(tmp_path, capsys, monkeypatch, isolated_dirs):
    # queries are noisy copies of their first positive; query 5 has no positives at all
    src = make_vpr_bench_folder(tmp_path / "src", 12, [[0, 1], [2], [4, 5], [7], [11], []])
    code, out, err = run(
        ["datasets", "import", str(src), "--format", "vpr-bench", "--name", "hand"],
        capsys,
        monkeypatch,
    )
    assert code == 0 and "imported" in out and "1 without positives" in out
    code, out, _ = run(
        ["evaluate", "--model", "pixels", "--dataset", "hand", "--k", "1,5"], capsys, monkeypatch
    )
    assert code == 0, out
    (record_path,) = (isolated_dirs["results"] / "runs").glob("pixels__hand__*.json")
    record = json.loads(record_path.read_text())
    assert record["results"]["recall"] == {"1": 5 / 6, "5": 5 / 6}
    assert record["results"]["num_queries_without_positives"] == 1
    assert record["settings"]["no_positive_policy"] == "miss"
    assert record["settings"]["search"]["exact"] is True
    code, out, _ = run(
        [
            "evaluate",
            "--model",
            "pixels",
            "--dataset",
            "hand",
            "--k",
            "1",
            "--no-positive-policy",
            "exclude",
        ],
        capsys,
        monkeypatch,
    )
    # Another --k and policy is another record: the first one is kept as it was.
    records = sorted((isolated_dirs["results"] / "runs").glob("pixels__hand__*.json"))
    assert len(records) == 2 and record_path in records
    assert json.loads(record_path.read_text())["results"]["recall"] == {"1": 5 / 6, "5": 5 / 6}
    (other,) = [r for r in records if r != record_path]
    record = json.loads(other.read_text())
    assert record["results"]["recall"] == {"1": 1.0} and record["results"]["num_evaluated"] == 5
    assert record["settings"]["no_positive_policy"] == "exclude"
    assert "nothing recomputed" in out
    preds = np.load(record["files"]["predictions"])
    assert preds["indices"].shape == (6, 12) and preds["indices"][1, 0] == 2


def test_quickstart_end_to_end(capsys, monkeypatch, isolated_dirs):
    code, out, err = run(["quickstart"], capsys, monkeypatch)
    assert code == 0, err
    assert "pixels" in out and "effnet-lite0-gem" in out and "run record" in out
    records = [
        json.loads(p.read_text())
        for p in sorted((isolated_dirs["results"] / "runs").glob("*.json"))
    ]
    assert sorted(r["model"]["name"] for r in records) == ["effnet-lite0-gem", "pixels"]
    gt = np.load(isolated_dirs["data"] / "nordland-sample" / "positives.npz")
    positives = [gt["indices"][gt["indptr"][i] : gt["indptr"][i + 1]] for i in range(600)]
    for record in records:
        assert (
            record["protocol"]["num_database"] == 600 and record["protocol"]["num_queries"] == 600
        )
        assert record["model"]["weights"]["random_init"] is False
        # recompute recall with plain numpy from the cached descriptors: same numbers as faiss gave
        with h5py.File(record["files"]["descriptors"], "r") as f:
            db, q = f["database"][...].astype(np.float64), f["queries"][...].astype(np.float64)
        order = np.argsort(((q[:, None, :] - db[None, :, :]) ** 2).sum(-1), axis=1, kind="stable")
        for k in (1, 5, 10, 20):
            hits = sum(bool(np.isin(order[i, :k], positives[i]).any()) for i in range(600))
            assert record["results"]["recall"][str(k)] == pytest.approx(hits / 600, abs=1 / 600)
    # Run again: everything comes from the cache.
    code, out, err = run(["quickstart"], capsys, monkeypatch)
    assert code == 0


def test_models_and_datasets_listing(capsys, monkeypatch):
    code, out, _ = run(["models", "list"], capsys, monkeypatch)
    assert code == 0 and "effnet-lite0-gem" in out and "dinov2-gem" in out
    code, out, _ = run(["models", "info", "dinov2-gem"], capsys, monkeypatch)
    assert code == 0 and json.loads(out)["options"] == {"backbone": "vitb14"}
    code, out, _ = run(["datasets", "list"], capsys, monkeypatch)
    assert code == 0 and "pitts30k-test" in out and "27,592" in out
    code, out, _ = run(["datasets", "info", "msls-val"], capsys, monkeypatch)
    assert code == 0 and "740" in out and "mapillary" in out.lower()
    code, out, _ = run(["datasets", "verify", "nordland-sample"], capsys, monkeypatch)
    assert code == 0 and "1,200 images readable" in out


def test_random_init_is_loud(tmp_path, capsys, monkeypatch, isolated_dirs):
    src = make_vpr_bench_folder(tmp_path / "src", 4, [[0], [1]], size=(28, 28))
    run(
        ["datasets", "import", str(src), "--format", "vpr-bench", "--name", "r"],
        capsys,
        monkeypatch,
    )
    code, out, err = run(
        [
            "evaluate",
            "--model",
            "dinov2-gem",
            "--set",
            "backbone=vits14",
            "--dataset",
            "r",
            "--image-size",
            "28",
            "28",
            "--k",
            "1",
        ],
        capsys,
        monkeypatch,
    )
    assert code == 0 and "RANDOM INIT" in err and "RANDOM INIT" in out
    (record,) = (isolated_dirs["results"] / "runs").glob("*.json")
    assert json.loads(record.read_text())["model"]["weights"]["random_init"] is True


@pytest.fixture
def hand(tmp_path, capsys, monkeypatch):
    src = make_vpr_bench_folder(tmp_path / "src", 4, [[0], [1]])
    run(
        ["datasets", "import", str(src), "--format", "vpr-bench", "--name", "hand"],
        capsys,
        monkeypatch,
    )
    return src


def test_unknown_model_and_dataset(hand, capsys, monkeypatch):
    code, _, err = run(["extract", "--model", "vlad", "--dataset", "hand"], capsys, monkeypatch)
    assert code == 1
    line = one_line_error(err)
    assert (
        "unknown model 'vlad'; did you mean 'netvlad'? valid names: boq-dinov2, boq-resnet50, "
        in line
    )
    # every registered name, sorted, so a new model card only adds to the list
    names = line.split("valid names: ")[1].split(", ")
    assert names == sorted(list_models()) and {"netvlad", "d2vpr", "pixels", "cricavpr"} <= set(
        names
    )
    code, _, err = run(["extract", "--model", "pixels", "--dataset", "handd"], capsys, monkeypatch)
    assert code == 1 and "unknown dataset 'handd'; valid names:" in one_line_error(err)


def test_missing_image_named(hand, capsys, monkeypatch, isolated_dirs):
    (hand / "query" / "0000001.png").unlink()
    code, _, err = run(["extract", "--model", "pixels", "--dataset", "hand"], capsys, monkeypatch)
    line = one_line_error(err)
    assert code == 1 and "0000001.png: cannot read image" in line
    assert not list(isolated_dirs["cache"].rglob("*.h5"))
    code, out, err = run(
        ["extract", "--model", "pixels", "--dataset", "hand", "--on-bad-image", "skip"],
        capsys,
        monkeypatch,
    )
    assert code == 0 and "1 unreadable image(s) skipped" in err
    code, out, err = run(
        [
            "evaluate",
            "--model",
            "pixels",
            "--dataset",
            "hand",
            "--on-bad-image",
            "skip",
            "--k",
            "1",
        ],
        capsys,
        monkeypatch,
    )
    (record,) = (isolated_dirs["results"] / "runs").glob("*.json")
    record = json.loads(record.read_text())
    assert record["settings"]["on_bad_image"] == "skip"
    assert record["results"]["num_skipped_query_images"] == 1
    assert record["results"]["recall"]["1"] == 0.5  # the skipped query is a miss


def test_ground_truth_count_mismatch(tmp_path, capsys, monkeypatch, isolated_dirs):
    src = make_vpr_bench_folder(tmp_path / "src", 4, [[0], [1]])
    (src / "query" / "0000001.png").unlink()
    code, _, err = run(
        ["datasets", "import", str(src), "--format", "vpr-bench", "--name", "x"],
        capsys,
        monkeypatch,
    )
    assert code == 1 and "2 queries, but" in one_line_error(err)
    assert not (isolated_dirs["data"] / "x").exists()


def test_malformed_registry(tmp_path, capsys, monkeypatch):
    bad = tmp_path / "datasets.yaml"
    bad.write_text("protocols:\n  sped:\n    description: x\n")
    monkeypatch.setenv("VPRBENCH_DATASETS_YAML", str(bad))
    code, _, err = run(["datasets", "list"], capsys, monkeypatch)
    assert code == 1 and f"{bad}: protocols.sped: missing field 'database'" in one_line_error(err)


def test_bad_weights(hand, tmp_path, capsys, monkeypatch, isolated_dirs):
    path = tmp_path / "w.pth"
    torch.save({"model_state_dict": {"head.weight": torch.zeros(2)}}, path)
    args = [
        "extract",
        "--model",
        "dinov2-gem",
        "--set",
        "backbone=vits14",
        "--dataset",
        "hand",
        "--image-size",
        "28",
        "28",
    ]
    code, _, err = run([*args, "--weights", str(path)], capsys, monkeypatch)
    line = one_line_error(err)
    assert (
        code == 1
        and "weights do not match the model" in line
        and "unexpected key(s): backbone.head.weight" in line
    )
    code, _, err = run([*args, "--weights", f"{path}#sha256={'1' * 64}"], capsys, monkeypatch)
    assert code == 1 and "sha256 mismatch" in one_line_error(err)
    assert not list(isolated_dirs["cache"].rglob("*.h5"))


def test_bad_option_values(hand, capsys, monkeypatch):
    code, _, err = run(
        ["evaluate", "--model", "pixels", "--dataset", "hand", "--k", "1,x"], capsys, monkeypatch
    )
    assert code == 1 and "--k expects positive integers" in one_line_error(err)
    code, _, err = run(
        ["evaluate", "--model", "pixels", "--dataset", "hand", "--k", "50"], capsys, monkeypatch
    )
    assert code == 1 and "k=50 exceeds the 4 database images" in one_line_error(err)
    code, _, err = run(
        ["extract", "--model", "pixels", "--dataset", "hand", "--device", "cuda"],
        capsys,
        monkeypatch,
    )
    if not torch.cuda.is_available():
        assert code == 1 and "CUDA is not available" in one_line_error(err)


def test_loader_processes_from_the_command_line(hand, capsys, monkeypatch, isolated_dirs):
    from vprbench.extract.loader import close_decoders

    base = ["--model", "pixels", "--dataset", "hand", "--workers", "2"]
    try:
        code, out, err = run(["extract", *base, "--loader", "processes"], capsys, monkeypatch)
    finally:
        close_decoders()
    assert code == 0 and "computed" in out, err
    code, out, _ = run(["extract", *base, "--loader", "threads"], capsys, monkeypatch)
    assert code == 0 and "nothing recomputed" in out  # the same descriptors, one cache entry
    code, _, err = run(["extract", *base, "--loader", "fork"], capsys, monkeypatch)
    assert code == 2 and "Invalid value for '--loader'" in err


def test_d2vpr_through_the_cache_with_overrides_and_pca(hand, capsys, monkeypatch, isolated_dirs):
    base = ["--dataset", "hand", "--image-size", "56", "56"]
    code, out, err = run(["extract", "--model", "d2vpr", *base], capsys, monkeypatch)
    assert code == 0 and "dim 10752" in out and "RANDOM INIT" in err
    code, out, _ = run(["extract", "--model", "d2vpr", *base], capsys, monkeypatch)
    assert "nothing recomputed" in out
    code, out, _ = run(
        ["extract", "--model", "d2vpr", "--set", "aggregator=gem", *base], capsys, monkeypatch
    )
    assert code == 0 and "dim 768" in out and "computed" in out
    files = sorted(isolated_dirs["cache"].rglob("d2vpr/*.h5"))
    assert len(files) == 2
    code, out, err = run(
        ["evaluate", "--model", "d2vpr-encoder", "--batch-size", "2", *base, "--k", "1",
         "--pca", "3", "--pca-fit", "hand"],
        capsys, monkeypatch,
    )  # fmt: skip
    assert code == 0, err
    (record_path,) = (isolated_dirs["results"] / "runs").glob("d2vpr-encoder__hand__*.json")
    record = json.loads(record_path.read_text())
    assert record["model"]["batch_dependent"] is True and record["settings"]["batch_size"] == 2
    assert record["settings"]["pca"]["dim"] == 3 and record["model"]["descriptor_dim"] == 3
    # the record says what was searched and how the PCA sample differs from the official one
    assert record["settings"]["search"]["metric"].startswith("L2 on PCA-3 projections")
    assert "evenly spaced" in record["settings"]["pca"]["fit_sample"]
    assert "pitts30k/images" in record["settings"]["pca"]["official_fit"]
    assert record["settings"]["batch_size_source"] == "--batch-size"
    with h5py.File(record["files"]["descriptors"], "r") as f:
        assert json.loads(f.attrs["key"])["batch_size"] == 2
    code, _, err = run(
        ["evaluate", "--model", "pixels", "--dataset", "hand", "--pca", "3"], capsys, monkeypatch
    )
    assert code == 1 and "--pca DIM and --pca-fit DATASET go together" in one_line_error(err)


def test_batch_dependent_models_use_their_own_official_batch_size():
    from types import SimpleNamespace

    from vprbench.extract.settings import ExtractSettings, resolve_batch_size
    from vprbench.models import get_card

    def dataset(protocol):
        return SimpleNamespace(name=protocol, manifest={"protocol": protocol})

    def model(name, dependent=True):
        return SimpleNamespace(batch_dependent=dependent, card=get_card(name))

    def size(name, protocol, **settings):
        return resolve_batch_size(
            ExtractSettings(model=name, **settings), dataset(protocol), model(name)
        )

    # CricaVPR's protocol: 8 on Pitts, 16 elsewhere (paper, CricaVPR#7; parser.py)
    assert size("cricavpr", "msls-val") == (16, "cricavpr default for msls-val")
    assert size("cricavpr", "pitts30k-test")[0] == 8 and size("cricavpr", "sped")[0] == 16
    assert size("cricavpr", "nordland-pnv")[0] == 16 and size("cricavpr", "amstertime")[0] == 16
    # D²-VPR's eval_encoder.py: SPED 3, AmsterTime/Pitts 8, MSLS-val/Nordland** 128
    assert [size("d2vpr-encoder", p)[0] for p in ("sped", "amstertime", "pitts30k-test",
            "pitts250k-test", "msls-val", "nordland-pnv")] == [3, 8, 8, 8, 128, 128]  # fmt: skip
    assert size("d2vpr-encoder", "sped")[1] == "d2vpr protocol for sped"
    assert size("cricavpr", "my-own-set")[1].startswith("cricavpr default (dataset 'my-own-set'")
    independent = resolve_batch_size(
        ExtractSettings(model="d2vpr"), dataset("sped"), model("d2vpr", dependent=False)
    )
    assert independent[0] == 32
    assert size("cricavpr", "sped", batch_size=5) == (5, "--batch-size")


def test_datasets_format_export_and_download_commands(tmp_path, capsys, monkeypatch, isolated_dirs):
    from tests.test_formatters import make_nordland_pnv, registry_with

    src = make_nordland_pnv(tmp_path / "pnv", n=12)
    registry_with(tmp_path, "nordland-pnv", 12, 12)
    monkeypatch.setenv("VPRBENCH_DATASETS_YAML", str(tmp_path / "datasets.yaml"))
    code, out, err = run(
        ["datasets", "format", "nordland-pnv", "--from", str(src)], capsys, monkeypatch
    )
    assert code == 0 and "formatted nordland-pnv: 12 database, 12 queries" in out, err
    out_dir = tmp_path / "exported"
    code, out, _ = run(
        ["datasets", "export", "nordland-pnv", "--to", "gsv-cities", "--out", str(out_dir)],
        capsys,
        monkeypatch,
    )
    assert code == 0 and (out_dir / "nordland_pnv_gt.npy").is_file()
    code, _, err = run(["datasets", "download", "msls-val"], capsys, monkeypatch)
    line = one_line_error(err)
    assert (
        code == 1
        and "mapillary.com/dataset/places" in line
        and "datasets format msls-val --from PATH" in line
    )
    code, _, err = run(["datasets", "format", "sped", "--from", str(src)], capsys, monkeypatch)
    assert code == 1 and "missing ground_truth_new.npy" in one_line_error(err)
