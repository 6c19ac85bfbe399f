"""Re-ranking stages against the official formulas on hand-made local features (issue 27, part)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from vprbench.rerank.selavpr import mutual_matches, rerank_order

E = np.eye(4, dtype=np.float32)  # 4 unit features: a 2 x 2 map of 4-d features


def grid(rows):
    return np.asarray(rows, dtype=np.float32).reshape(2, 2, 4)


def test_selavpr_mutual_nearest_neighbours_by_hand():
    query = grid(E)
    candidates = np.stack([
        grid(E),  # every query feature's nearest is its twin, and back: 4 mutual matches
        # e0 e0 e1 e1: query e0 -> candidate 0 (first of the tie) -> back to e0: mutual; e1 -> 2 ->
        # e1: mutual; e2 and e3 see only zeros, argmax 0, whose nearest query feature is e0: 2
        grid([E[0], E[0], E[1], E[1]]),
        # e0 four times: only e0 <-> candidate 0 is mutual: one match, which the official code
        # scores 0 (a 0-d nonzero() after squeeze)
        grid([E[0], E[0], E[0], E[0]]),
    ])  # fmt: skip
    assert mutual_matches(query, candidates).tolist() == [4.0, 2.0, 0.0]
    assert mutual_matches(query, candidates, one_match="count").tolist() == [4.0, 2.0, 1.0]
    assert mutual_matches(query, candidates).dtype == np.float32
    with pytest.raises(ValueError, match="one_match must be one of"):
        mutual_matches(query, candidates, one_match="one")


def test_selavpr_rerank_order_is_the_official_argsort_reversed():
    assert rerank_order(np.array([4.0, 2.0, 0.0])).tolist() == [0, 1, 2]
    assert rerank_order(np.array([0.0, 4.0, 2.0])).tolist() == [1, 2, 0]
    # ties: numpy's argsort keeps them in order, reversed: the later candidate first
    assert rerank_order(np.array([2.0, 2.0, 0.0], dtype=np.float32)).tolist() == [1, 0, 2]


def test_selavpr_local_features_are_network_pys():
    """network.py forward: x_norm_patchtokens.view(-1, 16, 16, 1024) -> permute -> LocalAdapt ->
    permute back -> L2 over channels: [B, 61, 61, 128]."""
    from vprbench.models import create_model

    torch.manual_seed(0)
    model = create_model("selavpr").eval()
    x = torch.rand(1, 3, 224, 224)
    with torch.inference_mode():
        local = model.local_features(x)
        (tokens,), _ = model.backbone(x)
        patch = model.backbone.norm(tokens)[:, 1:].reshape(-1, 16, 16, 1024)  # the view, row-major
        official = model.LocalAdapt(patch.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        official = torch.nn.functional.normalize(official, p=2, dim=-1)
    assert local.shape == (1, 61, 61, 128)
    torch.testing.assert_close(local, official)
    torch.testing.assert_close(local.norm(dim=-1), torch.ones(1, 61, 61))


R, G, B = (255, 0, 0), (0, 255, 0), (0, 0, 255)


class TopLeftAndPixels(torch.nn.Module):
    """A toy with local features: the global descriptor is the top-left pixel's colour, the local
    features are the 2 x 2 pixels' colours (each L2-normalised)."""

    def __init__(self):
        super().__init__()
        self.descriptor_dim = 3
        self.batch_dependent = False

    def forward(self, x):
        return torch.nn.functional.normalize(x[:, :, 0, 0], dim=1)

    def local_features(self, x):
        return torch.nn.functional.normalize(x.permute(0, 2, 3, 1), dim=-1)


def register_toys() -> None:
    """'test-local' (TopLeftAndPixels) and 'test-mnn' (SelaVPR's score on its 2 x 2 x 3 features),
    in this process (a torchrun test's script calls it in each rank)."""
    from vprbench import rerank
    from vprbench.models.base import VPRModel
    from vprbench.models.registry import ModelCard, WeightsInfo, register_model
    from vprbench.rerank import selavpr

    class Toy(TopLeftAndPixels, VPRModel):
        pass

    def build(options, weights, cache_dir):
        model = Toy()
        model.weights_info = WeightsInfo(source=None, sha256=None, random_init=False)
        return model

    card = ModelCard(name="test-local", description="test only", image_size=(2, 2),
                     descriptor_dim=3, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))  # fmt: skip
    register_model(card)(build)
    rerank.register_reranker(rerank.Reranker(
        name="test-mnn", model="test-local", description="test only", source="test",
        top_k=100, local_shape=(2, 2, 3), score=selavpr.mutual_matches, order=selavpr.rerank_order,
        options={"one_match": selavpr.ONE_MATCH}))  # fmt: skip


def unregister_toys() -> None:
    from vprbench import rerank
    from vprbench.models import registry

    registry._REGISTERED.pop("test-local")
    rerank.RERANKERS.pop("test-mnn")


def format_city(tmp_path, images: dict, name: str, capsys, monkeypatch) -> None:
    """Protocol ``name`` over 2 x 2 images {split: [((east, north), 4 pixels), ...]}, 25 m."""
    from PIL import Image

    from tests.test_cli import run
    from tests.test_protocols_2026 import vdd_name

    for folder, items in images.items():
        (tmp_path / "CITY" / "test" / folder).mkdir(parents=True)
        for i, ((east, north), pixels) in enumerate(items):
            Image.fromarray(np.array(pixels, dtype=np.uint8).reshape(2, 2, 3)).save(
                tmp_path
                / "CITY"
                / "test"
                / folder
                / vdd_name(east, north, f"{i:04d}").replace(".jpg", ".png")
            )
    counts = {split: len(items) for split, items in images.items()}
    (tmp_path / "datasets.yaml").write_text(f"""protocols:
  {name}:
    description: d
    database: {{count: {counts["database"]}, layout: "test/database"}}
    queries: {{count: {counts["queries"]}, layout: "test/queries"}}
    ground_truth: {{source: s, formats: [vdd]}}
    positive: {{rule: utm-radius, threshold: 25, unit: m}}
    licence: l
    obtain: o
    source: {{formatter: vdd, files: [test/database, test/queries]}}
""")
    monkeypatch.setenv("VPRBENCH_DATASETS_YAML", str(tmp_path / "datasets.yaml"))
    code, _, err = run(["datasets", "format", name, "--from", str(tmp_path / "CITY")],
                       capsys, monkeypatch)  # fmt: skip
    assert code == 0, err


# the query R G / B B; database: R R / R R far, G R / B B at 5 m (the positive), B G / G G far
CITY = {"database": [((552000.0, 4180000.0), [R, R, R, R]),
                     ((550005.0, 4180000.0), [G, R, B, B]),
                     ((551000.0, 4180000.0), [B, G, G, G])],
        "queries": [((550000.0, 4180000.0), [R, G, B, B])]}  # fmt: skip


@pytest.fixture
def toy_reranker(tmp_path, monkeypatch, capsys, isolated_dirs):
    """The toys registered for one test, and a formatted 3-image database + 1 query 'city-rerank'."""
    register_toys()
    try:
        format_city(tmp_path, CITY, "city-rerank", capsys, monkeypatch)
        yield
    finally:
        unregister_toys()


def test_evaluate_rerank_by_hand(toy_reranker, capsys, monkeypatch, isolated_dirs):
    """(The toy re-ranker's official number is 100: with 3 database images all 3 are re-ranked.)
    Global: the top-left pixels R (db 0, wrong, distance 0), G (db 1), B (db 2): R@1 0.
    Mutual nearest neighbours of the query's R G B B: db 0 (R R R R) only R <-> R: 1 match, which
    the official code scores 0; db 1 (G R B B): R, G and the first B: 3; db 2 (B G G G): G and the
    first B: 2. Re-ranked db 1, db 2, db 0: R@1 1."""
    import json

    from tests.test_cli import run

    argv = ["evaluate", "--model", "test-local", "--dataset", "city-rerank", "--k", "1,2", "--json"]
    code, out, err = run(argv, capsys, monkeypatch)
    assert code == 0, err
    plain = json.loads(out)
    assert (
        plain["results"]["recall"] == {"1": 0.0, "2": 1.0} and plain["settings"]["rerank"] is None
    )
    code, out, err = run([*argv, "--rerank", "test-mnn"], capsys, monkeypatch)
    assert code == 0, err
    record = json.loads(out)
    assert record["results"]["recall"] == {"1": 1.0, "2": 1.0}
    assert record["results"]["recall_global"] == {"1": 0.0, "2": 1.0}
    entry = record["settings"]["rerank"]
    assert (entry["name"], entry["k"], entry["options"]) == (
        "test-mnn",
        3,
        {"one_match": "official"},
    )
    assert entry["local_bytes_per_image"] == 2 * 2 * 3 * 4 and entry["seconds_per_query"] >= 0
    assert record["run_id"] != plain["run_id"]
    # VDD's name order puts the database as G R B B (5 m), B G G G, R R R R: global 2, 0, 1 (the
    # tie of 0 and 1 by index); re-ranked by the scores 3, 2, 0: 0, 1, 2
    with np.load(record["files"]["predictions"]) as z:
        assert z["indices"][0, :3].tolist() == [0, 1, 2]
        assert z["global_indices"][0, :3].tolist() == [2, 0, 1]
    # the local features are cached like descriptors: a second run extracts nothing
    local = Path(entry["local_descriptors"])
    assert "/descriptors/city-rerank/test-local/" in local.as_posix()
    stamp = local.stat().st_mtime_ns
    code, out, err = run([*argv, "--rerank", "test-mnn", "--rerank-option", "one_match=count"],
                         capsys, monkeypatch)  # fmt: skip
    assert code == 0 and local.stat().st_mtime_ns == stamp
    # answered from its request record: the model is not even built
    from vprbench.models import registry

    builds = []
    card, real_build = registry._REGISTERED["test-local"]
    # (set and restored here: a monkeypatch undo would put the test model back after the fixture
    # removed it, and every later test would see it registered)
    registry._REGISTERED["test-local"] = (
        card,
        lambda *a, **k: builds.append(1) or real_build(*a, **k),
    )
    try:
        code, _, err = run([*argv, "--rerank", "test-mnn"], capsys, monkeypatch)
    finally:
        registry._REGISTERED["test-local"] = (card, real_build)
    assert code == 0 and builds == [], err
    counted = json.loads(out)
    assert counted["settings"]["rerank"]["options"] == {"one_match": "count"}
    assert counted["run_id"] != record["run_id"]  # another option: another record
    # tables say the number is re-ranked
    from rich.console import Console

    from vprbench.ui import recall_table

    wide = Console(width=300, record=True)
    wide.print(recall_table([record, plain]))
    text = wide.export_text()
    assert "test-local [re-ranked: test-mnn, top 3]" in text and text.count("re-ranked") == 1
    # AUC-PR and R@100P threshold the global similarity: refused with --rerank; precision and map
    code, _, err = run([*argv, "--rerank", "test-mnn", "--metrics", "auc-pr"], capsys, monkeypatch)
    assert code == 1 and "not computed for a re-ranked run" in err
    code, out, err = run([*argv, "--rerank", "test-mnn", "--metrics", "precision,map"],
                         capsys, monkeypatch)  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["results"]["metrics"]["precision@k"]["1"] == 1.0  # re-ranked: db 0
    # bad requests name what is wrong
    code, _, err = run([*argv, "--rerank", "nope"], capsys, monkeypatch)
    assert code == 1 and "--rerank: unknown re-ranker 'nope'; registered:" in err
    code, _, err = run([*argv, "--rerank", "test-mnn", "--rerank-option", "one_match=maybe"],
                       capsys, monkeypatch)  # fmt: skip
    assert code == 1 and "option one_match='maybe'" in err
    code, _, err = run([*argv, "--rerank", "selavpr"], capsys, monkeypatch)
    assert code == 1 and "matches the local features of 'selavpr'; the model is 'test-local'" in err
