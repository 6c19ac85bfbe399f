"""Hostile and damaged input: object arrays read without running code, one-line errors for garbage,
truncated and wrong-shape files in every reader and for a non-checkpoint --weights, file modes that
follow the umask."""

import os
import stat

import numpy as np
import pytest
import torch

from tests.conftest import make_vpr_bench_folder
from vprbench.datasets.readers import read_gsv_cities, read_pnv, read_vpr_bench
from vprbench.datasets.safe_npy import load_npy
from vprbench.errors import VPRBenchError


class Payload:
    """Unpickling it would run a command."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_malicious_object_array_is_refused_and_never_run(tmp_path):
    marker = tmp_path / "ran"
    rows = np.empty((1, 2), dtype=object)
    rows[0] = [0, Payload(marker)]
    np.save(tmp_path / "gt.npy", rows, allow_pickle=True)
    with pytest.raises(
        VPRBenchError, match=r"gt.npy: not a safe ground truth file: refused to load .*system"
    ):
        load_npy(tmp_path / "gt.npy", "ground truth")
    assert not marker.exists()


def test_real_object_arrays_still_load(shared_data):
    gt = load_npy(shared_data / "gsv-cities" / "Nordland_gt.npy", "ground truth")
    assert len(gt) == 2760 and gt[0].tolist() == [0, 1]
    rows = load_npy(
        shared_data / "vprbench_gt" / "SPEDTEST" / "ground_truth_new.npy", "ground truth"
    )
    assert rows.shape == (607, 2) and list(rows[5][1]) == [5]


def _damage(path, how):
    data = path.read_bytes()
    if how == "garbage":
        path.write_bytes(b"this is not numpy at all")
    elif how == "truncated":
        path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("how", ["garbage", "truncated"])
def test_vpr_bench_reader_gives_one_line(tmp_path, how):
    folder = make_vpr_bench_folder(tmp_path / "vb", 4, [[0], [1]])
    _damage(folder / "ground_truth_new.npy", how)
    with pytest.raises(
        VPRBenchError, match=r"ground_truth_new.npy: (cannot read|not a safe)"
    ) as info:
        read_vpr_bench(folder)
    assert "\n" not in str(info.value)


def test_vpr_bench_reader_wrong_shape(tmp_path):
    folder = make_vpr_bench_folder(tmp_path / "vb", 4, [[0], [1]])
    np.save(folder / "ground_truth_new.npy", np.zeros((2, 3)))
    with pytest.raises(VPRBenchError, match=r"expected an \(N, 2\) array"):
        read_vpr_bench(folder)


@pytest.mark.parametrize("how", ["garbage", "truncated"])
def test_gsv_cities_reader_gives_one_line(tmp_path, how):
    np.save(tmp_path / "x_dbImages.npy", np.array(["a.jpg", "b.jpg"]))
    np.save(tmp_path / "x_qImages.npy", np.array(["q.jpg"]))
    gt = np.empty(1, dtype=object)
    gt[0] = np.array([0, 1])
    np.save(tmp_path / "x_gt.npy", gt, allow_pickle=True)
    assert read_gsv_cities(tmp_path).positives[0].tolist() == [0, 1]
    _damage(tmp_path / "x_gt.npy", how)
    with pytest.raises(
        VPRBenchError, match=r"x_gt.npy: (cannot read|not a safe) ground truth"
    ) as info:
        read_gsv_cities(tmp_path)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "content, match",
    [
        (b"garbage", r"cannot read as a Patch-NetVLAD .npz"),
        ("truncated", r"cannot read as a Patch-NetVLAD .npz"),
        ("shape", r"utmQ must be an \[N, 2\] array"),
    ],
)
def test_pnv_reader_gives_one_line(tmp_path, content, match):
    np.savez(tmp_path / "gt.npz", utmQ=np.zeros((2, 2)), utmDb=np.zeros((3, 2)), posDistThr=25)
    if content == "truncated":
        data = (tmp_path / "gt.npz").read_bytes()
        (tmp_path / "gt.npz").write_bytes(data[: len(data) // 2])
    elif content == "shape":
        np.savez(tmp_path / "gt.npz", utmQ=np.zeros(2), utmDb=np.zeros((3, 2)), posDistThr=25)
    else:
        (tmp_path / "gt.npz").write_bytes(content)
    (tmp_path / "db.txt").write_text("a\nb\nc\n")
    (tmp_path / "q.txt").write_text("x\ny\n")
    with pytest.raises(VPRBenchError, match=match) as info:
        read_pnv(tmp_path / "gt.npz", tmp_path / "db.txt", tmp_path / "q.txt")
    assert "\n" not in str(info.value)


def test_a_non_checkpoint_weights_file_is_one_line(tmp_path):
    from vprbench.models.weights import read_checkpoint

    (tmp_path / "notes.pth").write_text("hello")
    with pytest.raises(VPRBenchError) as info:
        read_checkpoint(tmp_path / "notes.pth")
    assert (
        str(info.value)
        == f"{tmp_path / 'notes.pth'}: not a PyTorch checkpoint (neither a torch.save zip nor a pickle of tensors)"
    )
    torch.save(
        {"state_dict": {"w": torch.ones(1)}, "x": Payload(tmp_path / "m")}, tmp_path / "evil.pth"
    )
    with pytest.raises(VPRBenchError) as info:
        read_checkpoint(tmp_path / "evil.pth")
    assert "\n" not in str(info.value) and "which vprbench does not unpickle" in str(info.value)


def test_written_files_follow_the_umask(tmp_path, tiny_dataset):
    from vprbench.atomic import write_text
    from vprbench.extract.run import extract
    from vprbench.extract.settings import ExtractSettings
    from vprbench.paths import cache_root

    old = os.umask(0o022)
    try:
        write_text(tmp_path / "record.json", "{}")
        result = extract(tiny_dataset, ExtractSettings(model="pixels"), cache_root())
    finally:
        os.umask(old)
    mode = lambda p: stat.S_IMODE(os.stat(p).st_mode)  # noqa: E731
    assert mode(tmp_path / "record.json") == 0o644
    assert mode(result.descriptors.path) == 0o644
    # the fixture formatted the dataset under the test process's own umask
    assert mode(tiny_dataset.folder) == 0o777 & ~old
