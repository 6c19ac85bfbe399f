"""Extraction into the HDF5 cache: reuse, invalidation, resume after kill -9, concurrency, bad images."""

import json
import os
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest
import torch

from tests.conftest import BatchMean, make_vpr_bench_folder
from vprbench.datasets.formatted import load_formatted
from vprbench.datasets.manage import import_dataset
from vprbench.datasets.protocols import load_registry
from vprbench.errors import VPRBenchError
from vprbench.extract.cache import DescriptorCache
from vprbench.extract.request import cache_key
from vprbench.extract.run import extract
from vprbench.extract.settings import ExtractSettings
from vprbench.paths import cache_root, data_root


def test_second_run_reuses_the_cache(tiny_dataset):
    first = extract(tiny_dataset, ExtractSettings(model="pixels"), cache_root())
    assert first.computed
    assert first.descriptors.database.shape == (12, 3072) and first.descriptors.queries.shape == (
        6,
        3072,
    )
    mtime = first.descriptors.path.stat().st_mtime_ns
    second = extract(tiny_dataset, ExtractSettings(model="pixels"), cache_root())
    assert not second.computed and second.descriptors.path == first.descriptors.path
    assert second.descriptors.path.stat().st_mtime_ns == mtime
    np.testing.assert_array_equal(first.descriptors.queries, second.descriptors.queries)


@pytest.mark.parametrize(
    "change",
    [
        {"image_size": (16, 16)},
        {"dtype": "bf16"},
        {"on_bad_image": "skip"},
    ],
)
def test_changed_key_never_reuses_stale_data(tiny_dataset, change):
    base = extract(tiny_dataset, ExtractSettings(model="pixels"), cache_root())
    changed = extract(tiny_dataset, ExtractSettings(model="pixels", **change), cache_root())
    assert changed.computed and changed.descriptors.path != base.descriptors.path
    assert changed.descriptors.key != base.descriptors.key


def test_batch_size_is_in_the_key_only_for_batch_dependent_models(tiny_dataset, batchmean_model):
    a = extract(tiny_dataset, ExtractSettings(model="pixels", batch_size=4), cache_root())
    b = extract(tiny_dataset, ExtractSettings(model="pixels", batch_size=5), cache_root())
    assert not b.computed and a.descriptors.path == b.descriptors.path
    c = extract(tiny_dataset, ExtractSettings(model="test-batchmean", batch_size=4), cache_root())
    d = extract(tiny_dataset, ExtractSettings(model="test-batchmean", batch_size=5), cache_root())
    assert d.computed and c.descriptors.path != d.descriptors.path
    assert (c.descriptors.key["batch_size"], d.descriptors.key["batch_size"]) == (4, 5)
    # batches never straddle database and queries: the first query batch is queries 0..3 alone
    q = load_formatted("tiny", data_root()).queries
    assert len(q) == 6 and not np.allclose(c.descriptors.queries, d.descriptors.queries)


def test_weights_digest_changes_the_key(tiny_dataset, tmp_path):
    from tests.test_models import official_dinov2_state_dict

    for seed in (1, 2):
        torch.save(official_dinov2_state_dict(seed=seed), tmp_path / f"w{seed}.pth")
    settings = dict(model="dinov2-gem", overrides={"backbone": "vits14"}, image_size=(28, 28))
    a = extract(
        tiny_dataset, ExtractSettings(weights=str(tmp_path / "w1.pth"), **settings), cache_root()
    )
    b = extract(
        tiny_dataset, ExtractSettings(weights=str(tmp_path / "w2.pth"), **settings), cache_root()
    )
    assert b.computed and a.descriptors.path != b.descriptors.path
    assert a.descriptors.key["weights_sha256"] != b.descriptors.key["weights_sha256"]


def test_bad_image_error_names_the_file_and_skip_is_recorded(tiny_dataset):
    bad = tiny_dataset.image_path(tiny_dataset.database[3])
    bad.write_bytes(b"\x89PNG broken")
    with pytest.raises(
        VPRBenchError, match=r"0000003.png: cannot read image .*--on-bad-image skip"
    ):
        extract(tiny_dataset, ExtractSettings(model="pixels"), cache_root())
    assert not list(cache_root().rglob("*.h5"))  # nothing that reads as complete
    result = extract(
        tiny_dataset, ExtractSettings(model="pixels", on_bad_image="skip"), cache_root()
    )
    assert result.descriptors.database_valid.tolist() == [i != 3 for i in range(12)]
    assert result.skipped["database"] and str(bad) in result.skipped["database"][0]


def test_loader_processes_give_the_threads_bytes_and_share_their_cache_entry(
    tiny_dataset, tmp_path
):
    from vprbench.extract import loader
    from vprbench.extract.loader import close_decoders

    bad = tiny_dataset.image_path(tiny_dataset.database[3])
    bad.write_bytes(b"\x89PNG broken")
    threads = ExtractSettings(model="pixels", on_bad_image="skip", batch_size=5, workers=2)
    processes = ExtractSettings(**{**threads.__dict__, "loader": "processes"})
    try:
        strict = ExtractSettings(**{**processes.__dict__, "on_bad_image": "error"})
        with pytest.raises(VPRBenchError, match=r"0000003.png: cannot read image"):
            extract(tiny_dataset, strict, tmp_path / "failed")
        ours = extract(tiny_dataset, processes, tmp_path / "processes")
        reason = ": cannot read image (not a decodable image)"
        assert ours.computed and ours.skipped["database"] == [str(bad) + reason]
        # one pool for both splits (12 and 6 images) at batch size 8: rings of 8 rows
        wide = ExtractSettings(**{**processes.__dict__, "batch_size": 8})
        loader.close_decoders()
        extract(tiny_dataset, wide, tmp_path / "wide")
        assert [key[1][1] for key in loader._DECODERS] == [8]
    finally:
        close_decoders()
    reference = extract(tiny_dataset, threads, tmp_path / "threads")
    assert ours.descriptors.key == reference.descriptors.key
    for split in ("database", "queries"):
        assert (getattr(ours.descriptors, split).tobytes()
                == getattr(reference.descriptors, split).tobytes())  # fmt: skip
    # the loader is not part of the request: a warm run with threads reuses it
    warm = extract(tiny_dataset, threads, tmp_path / "processes")
    assert not warm.computed and warm.descriptors.path == ours.descriptors.path
    for change, message in (
        ({"workers": 0}, r"--loader processes needs --workers 1 or more"),
        ({"decode": "device"}, r"--loader processes decodes with PIL; --decode device"),
        ({"loader": "fork"}, r"--loader must be one of \['threads', 'processes'\], got 'fork'"),
    ):
        with pytest.raises(VPRBenchError, match=message):
            extract(tiny_dataset, ExtractSettings(**{**processes.__dict__, **change}), tmp_path)


def test_loader_defaults_to_processes_on_cuda_and_to_threads_without_shared_memory(
    tiny_dataset, tmp_path, monkeypatch
):
    from vprbench.extract import loader
    from vprbench.extract import settings as extraction

    assert extraction.default_loader("cuda", "pil", 15) == "processes"
    assert extraction.default_loader(torch.device("cuda:1"), "pil", 15) == "processes"
    assert extraction.default_loader("cuda", "device", 15) == "threads"  # nvJPEG: nothing to decode
    assert extraction.default_loader("cuda", "pil", 0) == "threads"  # --workers 0: in this thread
    assert extraction.default_loader("cpu", "pil", 4) == "threads"
    # under torchrun each process on a node takes its share of the CPUs
    monkeypatch.setattr(extraction, "available_cpus", lambda: 64)
    assert extraction.default_workers("cuda") == 16 and extraction.default_workers("cpu") == 8
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    assert extraction.default_workers("cuda") == 7 and extraction.default_workers("cpu") == 1
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "64")
    assert extraction.default_workers("cuda") == 1 and extraction.default_workers("cpu") == 0
    monkeypatch.undo()
    named = ExtractSettings(model="pixels", loader="processes")
    assert extraction.resolve_loader(named, torch.device("cpu"))[1] >= 1  # even on 2 CPUs
    reference = extract(tiny_dataset, ExtractSettings(model="pixels"), tmp_path / "reference")

    def no_room(size, folder="/dev/shm"):
        raise loader.SharedMemoryTooSmall(f"{folder} has 0 MiB free")

    loader.close_decoders()  # a running pool would not look at /dev/shm again
    monkeypatch.setattr(loader, "_check_shared_memory", no_room)
    monkeypatch.setattr(extraction, "default_loader", lambda *args: "processes")  # as on CUDA
    with pytest.warns(UserWarning, match="0 MiB free: decoding in loader threads instead"):
        fallback = extract(tiny_dataset, ExtractSettings(model="pixels", workers=1), tmp_path / "a")
    assert fallback.descriptors.database.tobytes() == reference.descriptors.database.tobytes()
    with pytest.raises(VPRBenchError, match="0 MiB free"):  # named, it is not replaced
        extract(tiny_dataset, ExtractSettings(model="pixels", loader="processes"), tmp_path / "b")


def test_a_first_batch_of_only_unreadable_images_is_assembled(tiny_dataset, tmp_path):
    before = extract(tiny_dataset, ExtractSettings(model="pixels"), tmp_path / "before")
    # batch 0 (images 0-3) holds no readable image: its shard has no columns, the others do
    for i in range(4):
        tiny_dataset.image_path(tiny_dataset.database[i]).write_bytes(b"broken")
    settings = ExtractSettings(model="pixels", on_bad_image="skip", batch_size=4)
    db = extract(tiny_dataset, settings, cache_root()).descriptors
    assert db.database.shape == (12, 3072)
    assert db.database_valid.tolist() == [i >= 4 for i in range(12)]
    assert not db.database[:4].any()
    np.testing.assert_array_equal(db.database[4:], before.descriptors.database[4:])


def _big_dataset(tmp_path, n=96):
    folder = make_vpr_bench_folder(
        tmp_path / "big_src", n, [[i] for i in range(n // 2)], size=(40, 40)
    )
    import_dataset(folder, "vpr-bench", "big", data_root(), load_registry())
    return load_formatted("big", data_root())


def _extract_cmd(cache, batch_size=4):
    return [
        sys.executable,
        "-m",
        "vprbench",
        "extract",
        "--model",
        "effnet-lite0-gem",
        "--dataset",
        "big",
        "--image-size",
        "64",
        "64",
        "--batch-size",
        str(batch_size),
        "--cache-dir",
        str(cache),
    ]


def _h5_arrays(path):
    with h5py.File(path, "r") as f:
        return {k: f[k][...] for k in f}, json.loads(f.attrs["key"])


def test_resume_after_kill_is_byte_identical(tmp_path):
    _big_dataset(tmp_path)
    env = dict(os.environ, VPRBENCH_FAULT_SLEEP_PER_BATCH="0.2")
    killed_cache = tmp_path / "killed"
    proc = subprocess.Popen(
        _extract_cmd(killed_cache), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 120
    shards = []
    while time.time() < deadline and len(shards) < 6:
        shards = list(killed_cache.rglob("database-*.npz"))
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert 6 <= len(shards) < 24, "the kill must land in the middle of the database split"
    assert not list(killed_cache.rglob("*.h5")), (
        "a killed run must not leave a complete-looking file"
    )
    # resume, without the fault injection; then an uninterrupted reference run in another cache
    subprocess.run(_extract_cmd(killed_cache), check=True, capture_output=True)
    subprocess.run(_extract_cmd(tmp_path / "clean"), check=True, capture_output=True)
    (resumed,) = killed_cache.rglob("*.h5")
    (clean,) = (tmp_path / "clean").rglob("*.h5")
    a, key_a = _h5_arrays(resumed)
    b, key_b = _h5_arrays(clean)
    assert key_a == key_b and sorted(a) == sorted(b)
    for name in a:
        assert a[name].tobytes() == b[name].tobytes(), name
    assert not list(killed_cache.rglob("*.partial"))


def test_resume_keeps_the_batch_size_of_the_partial_run(tmp_path):
    ds = _big_dataset(tmp_path, n=16)
    cache = DescriptorCache(cache_root())
    settings = ExtractSettings(model="pixels", batch_size=4)
    from vprbench.datasets.images import Preprocess
    from vprbench.models import create_model

    model = create_model("pixels")
    card = model.card
    pre = Preprocess(card.image_size, card.interpolation, card.mean, card.std)
    key = cache_key(model, ds, pre, settings, 4)
    folder, bs = cache.open_partial(key, 4)
    assert bs == 4
    # a later run asking for batch 8 continues with the shards' batch size 4
    result = extract(ds, ExtractSettings(model="pixels", batch_size=8), cache_root())
    assert result.batch_size == 4 and result.descriptors.path == cache.path_for(key)


def test_two_processes_on_one_cache(tmp_path):
    _big_dataset(tmp_path, n=32)
    cache = tmp_path / "shared_cache"
    procs = [
        subprocess.Popen(_extract_cmd(cache, 8), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=300)[0].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    (final,) = cache.rglob("*.h5")
    subprocess.run(_extract_cmd(tmp_path / "ref", 8), check=True, capture_output=True)
    (ref,) = (tmp_path / "ref").rglob("*.h5")
    a, _ = _h5_arrays(final)
    b, _ = _h5_arrays(ref)
    assert all(a[k].tobytes() == b[k].tobytes() for k in a)
    assert sum("nothing recomputed" in o for o in outputs) == 1  # the second waited, then reused


def _sped_like(tmp_path, n=12):
    """A formatted 'sped' (the vdd-pairs batch order) of n pairs named 0000000..; query i is a noisy
    copy of database image i."""
    folder = make_vpr_bench_folder(tmp_path / "sped_src", n, [[i] for i in range(n)], size=(8, 8))
    from tests.test_formatters import registry_with

    import_dataset(folder, "vpr-bench", "sped", data_root(), registry_with(tmp_path, "sped", n, n))
    return load_formatted("sped", data_root())


def _forward(ds, split, indices):
    """BatchMean's descriptors of ``indices`` of ``split`` run as one batch."""
    from vprbench.datasets.images import ImageList, Preprocess
    from vprbench.models.registry import IMAGENET_MEAN, IMAGENET_STD

    images = ImageList(
        [ds.image_path(p) for p in ds.split(split)],
        Preprocess((8, 8), "bilinear", IMAGENET_MEAN, IMAGENET_STD),
    )
    with torch.inference_mode():
        return BatchMean()(torch.stack([images[i][1] for i in indices])).numpy()


def test_batch_dependent_models_batch_in_the_official_order(tmp_path, batchmean_model):
    ds = _sped_like(tmp_path)
    # VDD names SPED image i '@0@{i*1000}@...' without padding, and the official code batches the
    # sorted names: '0@' < '10000@' < '1000@' < '11000@' < '2000@' ('0' sorts before '@'), so the
    # images go 0, 10, 1, 11, 2, ..., 9.
    official = [[0, 10, 1], [11, 2, 3], [4, 5, 6], [7, 8, 9]]
    assert ds.batch_order("database").tolist() == sum(official, [])
    result = extract(ds, ExtractSettings(model=batchmean_model), cache_root())
    assert (
        result.batch_size == 3
    )  # D²-VPR's SPED size (eval_encoder.py), from the model's convention
    assert result.batch_size_source == "d2vpr protocol for sped"
    for split in ("database", "queries"):
        got = getattr(result.descriptors, split)
        for batch in official:
            np.testing.assert_allclose(got[batch], _forward(ds, split, batch), atol=1e-6)
    # dataset-order batches ([0, 1, 2], ...) would have given other descriptors
    assert not np.allclose(
        result.descriptors.database[[0, 1, 2]], _forward(ds, "database", [0, 1, 2])
    )
    # the order is in the key of a batch-dependent model only
    assert result.descriptors.key["batch_order"] is not None
    pixels = extract(ds, ExtractSettings(model="pixels"), cache_root())
    assert pixels.descriptors.key["batch_order"] is None


def test_skipped_images_stay_out_of_a_batch_dependent_forward(tmp_path, batchmean_model):
    ds = _sped_like(tmp_path)
    ds.image_path(ds.database[10]).write_bytes(b"not an image")
    result = extract(ds, ExtractSettings(model=batchmean_model, on_bad_image="skip"), cache_root())
    db = result.descriptors
    assert db.database_valid.tolist() == [i != 10 for i in range(12)]
    # official batch {0, 10, 1} lost image 10: 0 and 1 are computed together, without a zero image
    np.testing.assert_allclose(db.database[[0, 1]], _forward(ds, "database", [0, 1]), atol=1e-6)
    assert not db.database[10].any()


def test_reimported_images_under_the_same_name_are_extracted_again(tmp_path):
    a = make_vpr_bench_folder(tmp_path / "copyA", 6, [[0], [1]], seed=1)
    b = make_vpr_bench_folder(tmp_path / "copyB", 6, [[0], [1]], seed=2)  # same names, new pixels
    import_dataset(a, "vpr-bench", "mine", data_root(), load_registry())
    first = extract(
        load_formatted("mine", data_root()), ExtractSettings(model="pixels"), cache_root()
    )
    import_dataset(b, "vpr-bench", "mine", data_root(), load_registry())
    second = extract(
        load_formatted("mine", data_root()), ExtractSettings(model="pixels"), cache_root()
    )
    assert second.computed and second.descriptors.path != first.descriptors.path
    assert not np.allclose(first.descriptors.database, second.descriptors.database)
    fresh = extract(
        load_formatted("mine", data_root()), ExtractSettings(model="pixels"), tmp_path / "fresh"
    )
    assert fresh.descriptors.database.tobytes() == second.descriptors.database.tobytes()
    # a file changed in place is a new key too
    image = tmp_path / "copyB" / "ref" / "0000000.png"
    stat = image.stat()
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    third = extract(
        load_formatted("mine", data_root()), ExtractSettings(model="pixels"), cache_root()
    )
    assert third.computed


def test_positives_are_not_in_the_descriptor_key(tmp_path):
    # The same images with other positives (a corrected ground truth) reuse the descriptors.
    make_vpr_bench_folder(tmp_path / "src", 6, [[0], [1]])
    import_dataset(tmp_path / "src", "vpr-bench", "mine", data_root(), load_registry())
    first = extract(
        load_formatted("mine", data_root()), ExtractSettings(model="pixels"), cache_root()
    )
    rows = np.empty((2, 2), dtype=object)
    rows[0] = [0, [0, 1]]
    rows[1] = [1, [1, 2]]
    np.save(tmp_path / "src" / "ground_truth_new.npy", rows, allow_pickle=True)
    import_dataset(tmp_path / "src", "vpr-bench", "mine", data_root(), load_registry())
    again = extract(
        load_formatted("mine", data_root()), ExtractSettings(model="pixels"), cache_root()
    )
    assert not again.computed and again.descriptors.path == first.descriptors.path


def test_shuffled_batches_are_a_seeded_permutation_of_each_split(tmp_path, batchmean_model):
    ds = _sped_like(tmp_path)
    official = extract(ds, ExtractSettings(model=batchmean_model), cache_root())
    shuffled = extract(
        ds, ExtractSettings(model=batchmean_model, batch_order="shuffled"), cache_root()
    )
    assert shuffled.computed and shuffled.descriptors.path != official.descriptors.path
    assert shuffled.batch_order.startswith("shuffled batches (seed 0)")
    for s, split in enumerate(("database", "queries")):
        order = np.random.default_rng([0, s]).permutation(12)  # seed 0, then the split's index
        got = getattr(shuffled.descriptors, split)
        for b in range(4):
            batch = order[3 * b : 3 * b + 3].tolist()
            np.testing.assert_allclose(got[batch], _forward(ds, split, batch), atol=1e-6)
    # a model that is not batch-dependent ignores the order: the same cache entry
    a = extract(ds, ExtractSettings(model="pixels"), cache_root())
    b = extract(ds, ExtractSettings(model="pixels", batch_order="shuffled"), cache_root())
    assert not b.computed and a.descriptors.path == b.descriptors.path


def test_interpolation_and_normalisation_options_reach_the_pixels(tmp_path, tiny_dataset):
    base = extract(tiny_dataset, ExtractSettings(model="pixels"), cache_root())
    half = extract(
        tiny_dataset, ExtractSettings(model="pixels", normalisation="half"), cache_root()
    )
    cubic = extract(
        tiny_dataset, ExtractSettings(model="pixels", interpolation="bicubic"), cache_root()
    )
    assert half.preprocess.mean == (0.5, 0.5, 0.5) and half.preprocess.std == (0.5, 0.5, 0.5)
    assert (
        cubic.preprocess.interpolation == "bicubic" and base.preprocess.interpolation == "bilinear"
    )
    assert len({base.descriptors.path, half.descriptors.path, cubic.descriptors.path}) == 3
    # pixels removes each image's mean and L2-normalises: blind to x -> 2x - 1 ("half"), not to
    # ImageNet's per-channel scaling, which is worked out here from the image files
    np.testing.assert_allclose(half.descriptors.database, base.descriptors.database, atol=1e-6)
    imagenet = extract(tiny_dataset, ExtractSettings(model="pixels", normalisation="imagenet"),
                       cache_root())  # fmt: skip
    from vprbench.datasets.images import ImageList, Preprocess
    from vprbench.models.registry import IMAGENET_MEAN, IMAGENET_STD

    images = ImageList([tiny_dataset.image_path(p) for p in tiny_dataset.database],
                       Preprocess((32, 32), "bilinear", IMAGENET_MEAN, IMAGENET_STD))  # fmt: skip
    flat = np.stack([images[i][1].numpy().ravel() for i in range(12)])
    flat -= flat.mean(axis=1, keepdims=True)
    expected = flat / np.linalg.norm(flat, axis=1, keepdims=True)
    np.testing.assert_allclose(imagenet.descriptors.database, expected, atol=1e-5)
    assert not np.allclose(imagenet.descriptors.database, base.descriptors.database, atol=1e-3)
    with pytest.raises(VPRBenchError, match="--normalisation must be one of"):
        extract(tiny_dataset, ExtractSettings(model="pixels", normalisation="clip"), cache_root())


def test_a_repeated_request_is_served_without_the_model_or_torch(tiny_dataset, isolated_dirs):
    cold = extract(tiny_dataset, ExtractSettings(model="pixels"), cache_root())
    assert cold.module is not None and list((cache_root() / "requests").glob("*.json"))
    warm = extract(tiny_dataset, ExtractSettings(model="pixels"), cache_root())
    assert warm.module is None and not warm.computed
    assert warm.model == cold.model and warm.preprocess == cold.preprocess
    assert warm.descriptors.path == cold.descriptors.path
    # a fresh interpreter: the whole `vprbench evaluate` never imports torch
    script = (
        "import sys\n"
        "sys.argv = ['vprbench', 'evaluate', '--model', 'pixels', '--dataset', 'tiny', '--k', '1,5', '--json']\n"
        "from vprbench.cli import main\n"
        "try:\n    main()\nexcept SystemExit as exc:\n    assert not exc.code, exc.code\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, env={**os.environ})  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout)["results"]["recall"]["1"] == 5 / 6


def test_a_touched_weights_file_or_image_is_looked_at_again(tiny_dataset, tmp_path):
    from vprbench.models import create_model

    weights = tmp_path / "effnet.pth"
    torch.save(create_model("effnet-lite0-gem").state_dict(), weights)
    settings = ExtractSettings(model="effnet-lite0-gem", weights=str(weights), image_size=(32, 32))
    cold = extract(tiny_dataset, settings, cache_root())
    assert cold.computed and cold.model.weights_info["sha256"]
    assert extract(tiny_dataset, settings, cache_root()).module is None
    os.utime(weights, ns=(time.time_ns(), time.time_ns()))  # same bytes, new mtime
    again = extract(tiny_dataset, settings, cache_root())
    assert again.module is not None and not again.computed  # hashed again: the same key
    image = tiny_dataset.image_path(tiny_dataset.queries[0])
    os.utime(image, ns=(time.time_ns(), time.time_ns()))
    assert extract(tiny_dataset, settings, cache_root()).computed  # another image identity


def test_torchrun_shares_the_batches_and_the_merge_equals_one_process(tiny_dataset, tmp_path):
    import socket

    one = extract(tiny_dataset, ExtractSettings(model="pixels", batch_size=4), tmp_path / "one")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
         "--master_addr", "127.0.0.1", "--master_port", str(port), "-m", "vprbench", "extract",
         "--model", "pixels", "--dataset", "tiny", "--batch-size", "4", "--cache-dir",
         str(tmp_path / "two")],
        capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    (two,) = (tmp_path / "two" / "descriptors").rglob("*.h5")
    assert two.name == one.descriptors.path.name  # the same key
    with h5py.File(one.descriptors.path) as a, h5py.File(two) as b:
        assert set(a) == set(b) and dict(a.attrs) == dict(b.attrs)
        for name in a:
            assert a[name][()].tobytes() == b[name][()].tobytes(), name
    assert not list((tmp_path / "two").rglob("*.npz"))  # shards merged and removed


def test_compile_gives_the_eager_descriptors_under_the_same_key(tiny_dataset, tmp_path):
    from vprbench.extract.settings import COMPILE_TOLERANCE

    eager = extract(tiny_dataset, ExtractSettings(model="pixels"), tmp_path / "eager")
    compiled = extract(tiny_dataset, ExtractSettings(model="pixels", compile=True), tmp_path / "c")
    assert compiled.computed and compiled.descriptors.key == eager.descriptors.key
    assert compiled.module.__dict__["_vprbench_compiled"] is not None  # it did compile
    assert "_vprbench_compiled" not in str(list(compiled.module.state_dict()))
    diff = np.abs(compiled.descriptors.database - eager.descriptors.database).max()
    assert diff <= COMPILE_TOLERANCE


def test_device_decoding_matches_pil_within_one_level(tmp_path):
    """--decode device: a JPEG decoded by torchvision, a PNG decoded by PIL in the worker and a broken
    JPEG, against the PIL path: bilinear downsampling agrees within one grey level of 255."""
    from PIL import Image

    from vprbench.choices import IMAGENET_MEAN, IMAGENET_STD
    from vprbench.datasets.images import (
        EncodedImageList,
        ImageList,
        Preprocess,
        collate_encoded,
        decode_on_device,
    )

    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:480, 0:640]
    img = np.stack([x * 255 // 639, y * 255 // 479, (x + y) % 256], -1)
    img = np.clip(img + rng.integers(-20, 21, img.shape), 0, 255).astype(np.uint8)
    Image.fromarray(img).save(tmp_path / "a.jpg", quality=90)
    Image.fromarray(img[::2, ::2]).save(tmp_path / "b.png")
    (tmp_path / "c.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(100))
    paths = [tmp_path / n for n in ("a.jpg", "b.png", "c.jpg")]
    pre = Preprocess((224, 224), "bilinear", IMAGENET_MEAN, IMAGENET_STD)
    indices, encoded, errors = collate_encoded([EncodedImageList(paths)[i] for i in range(3)])
    assert indices.tolist() == [0, 1, 2] and encoded[0].dim() == 1 and encoded[1].dim() == 3
    out, errors = decode_on_device(encoded, errors, pre, paths, torch.device("cpu"))
    assert (
        errors[:2] == ["", ""]
        and errors[2] == f"{paths[2]}: cannot read image (not a decodable image)"
    )
    assert out.shape == (3, 3, 224, 224) and out.dtype == torch.uint8 and not out[2].any()
    assert out.is_contiguous(memory_format=torch.channels_last)  # as the loader's batches
    for i in (0, 1):
        diff = (out[i].int() - ImageList(paths, pre, normalise=False)[i][1].int()).abs()
        assert diff.max() <= 1 and diff.float().mean() < 0.5


def test_device_decoding_is_its_own_cache_entry(tiny_dataset, tmp_path):
    pil = extract(tiny_dataset, ExtractSettings(model="pixels"), cache_root())
    settings = ExtractSettings(model="pixels", decode="device", workers=1)
    dev = extract(tiny_dataset, settings, cache_root())
    assert dev.computed and dev.descriptors.key["decode"] == "torchvision on cpu"
    assert "decode" not in pil.descriptors.key  # PIL decoding keeps the earlier keys
    assert dev.descriptors.path != pil.descriptors.path
    # 24x32 PNGs resized to 32x32: the same pixels within a grey level, so nearly the same vectors
    np.testing.assert_allclose(dev.descriptors.queries, pil.descriptors.queries, atol=2e-3)
    again = extract(tiny_dataset, ExtractSettings(model="pixels", decode="device"), cache_root())
    assert not again.computed and again.descriptors.path == dev.descriptors.path
    with pytest.raises(VPRBenchError, match=r"--decode must be one of \['pil', 'device'\]"):
        extract(tiny_dataset, ExtractSettings(model="pixels", decode="gpu"), cache_root())


def test_a_computed_extraction_says_where_its_time_went(tiny_dataset):
    from vprbench.extract.settings import STAGES, WRITER_STAGES

    first = extract(tiny_dataset, ExtractSettings(model="pixels", workers=1), cache_root())
    assert set(first.timings) == set(STAGES) and min(first.timings.values()) >= 0
    assert first.timings["decode_on_device"] == 0  # PIL decoding
    assert first.timings["loader_wait"] > 0 and first.timings["shard_write"] > 0
    main = [v for k, v in first.timings.items() if k not in WRITER_STAGES]
    assert sum(main) <= first.seconds  # disjoint parts of the main thread's time
    assert sum(first.timings[k] for k in WRITER_STAGES) <= first.seconds  # the writer thread's
    assert extract(tiny_dataset, ExtractSettings(model="pixels"), cache_root()).timings == {}


def test_a_failed_shard_write_stops_the_extraction_and_a_rerun_completes_it(tiny_dataset, tmp_path):
    clean = extract(tiny_dataset, ExtractSettings(model="pixels", batch_size=2), tmp_path / "clean")
    real = DescriptorCache.write_shard
    written = []

    def failing(folder, split, batch, *arrays):
        if (split, batch) == ("database", 3):
            raise OSError(28, "No space left on device")
        real(folder, split, batch, *arrays)
        written.append((split, batch))

    settings = ExtractSettings(model="pixels", batch_size=2, workers=2)
    try:
        DescriptorCache.write_shard = staticmethod(failing)
        with pytest.raises(OSError, match="No space left"):
            extract(tiny_dataset, settings, cache_root())
    finally:
        DescriptorCache.write_shard = staticmethod(real)
    # the writer thread stops at the failure: the shards before it are kept, none after it
    assert written == [("database", b) for b in range(3)]
    assert sorted(p.name for p in cache_root().rglob("*.npz")) == [
        f"database-{b:06d}.npz" for b in range(3)
    ]
    again = extract(tiny_dataset, settings, cache_root())
    assert again.computed
    for split in ("database", "queries"):
        assert (
            getattr(again.descriptors, split).tobytes()
            == getattr(clean.descriptors, split).tobytes()
        )


def test_the_final_file_takes_added_batches_as_given_and_the_rest_from_their_shards(tmp_path):
    from vprbench.extract.cache import Assembly

    cache = DescriptorCache(tmp_path)
    key = {"dataset": "d", "model": "m", "setting": 1}
    folder, batch = cache.open_partial(key, 2)
    rows = {0: [0, 1], 1: [3, 2], 2: [4]}  # batch 1 in another order, as a batch-dependent model's
    shard = {b: np.array([[10.0 * r, 1.0] for r in rs], np.float32) for b, rs in rows.items()}
    for b, rs in rows.items():
        cache.write_shard(folder, "database", b, shard[b], np.array([True] * len(rs)), np.array(rs))
    cache.write_shard(folder, "queries", 0, np.zeros((1, 0), np.float32), np.array([False]),
                      np.array([0]))  # fmt: skip
    assembly = Assembly(cache, key, folder, {"database": 5, "queries": 1})
    # batch 1 arrives while the extraction runs (with values unlike its shard's, to tell them apart)
    assembly.add("database", 1, np.array([[-3, 0], [-2, 0]], np.float32), np.array([True, False]),
                 np.array([3, 2]))  # fmt: skip
    assert not list(tmp_path.rglob("*.h5"))  # the file being filled does not look complete
    path = assembly.finish(batch)
    arrays, stored_key = _h5_arrays(path)
    assert stored_key == key and not folder.exists()
    np.testing.assert_array_equal(
        arrays["database"], [[0, 1], [10, 1], [-2, 0], [-3, 0], [40, 1]]
    )  # rows 0, 1 and 4 from the shards, 2 and 3 as added
    assert arrays["database_valid"].tolist() == [True, True, False, True, True]
    assert arrays["queries"].shape == (1, 0) and arrays["queries_valid"].tolist() == [False]
    assert DescriptorCache(tmp_path).load(key).database.shape == (5, 2)


def test_the_final_file_names_the_rows_no_shard_holds(tmp_path):
    from vprbench.extract.cache import Assembly

    cache = DescriptorCache(tmp_path)
    key = {"dataset": "d", "model": "m"}
    folder, batch = cache.open_partial(key, 2)
    cache.write_shard(folder, "database", 0, np.ones((2, 3), np.float32), np.ones(2, bool),
                      np.array([0, 1]))  # fmt: skip
    with pytest.raises(VPRBenchError, match="database shards miss 2 of 4 rows"):
        Assembly(cache, key, folder, {"database": 4, "queries": 0}).finish(batch)
    assert not list(tmp_path.rglob("*.h5"))
