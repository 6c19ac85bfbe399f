"""SelaVPR++'s two-branch model and its binary-then-float re-ranking against the official formulas
(Lu-Feng/SelaVPRplusplus model/network.py with hashing and rerank on, model/vision_transformer.py,
test_rerank.py; issue 27)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.official_keys import count, random_state
from tests.test_edtformer_fol_selavpr_pp import build, multiconv, selavpr_pp_keys, vit_blocks
from vprbench.errors import VPRBenchError
from vprbench.models import get_card
from vprbench.rerank import RERANKERS


def rerank_keys(arch: str) -> dict[str, tuple]:
    """network.py with hashing and rerank: the float model's keys, a second MultiConv chain
    ``backbone.adapters_hashing.N`` of the same shapes, ``aggregation_hashing.1.p``, ``linear3``
    (C x C) and ``linear4`` (512 x C)."""
    keys = selavpr_pp_keys(arch)
    c = 1024 if arch == "vitl14" else 768
    keys.update({k.replace("backbone.adapters.", "backbone.adapters_hashing."): v
                 for k, v in list(keys.items()) if k.startswith("backbone.adapters.")})  # fmt: skip
    keys.update({"aggregation_hashing.1.p": (1,), "linear3.weight": (c, c), "linear3.bias": (c,),
                 "linear4.weight": (512, c), "linear4.bias": (512,)})  # fmt: skip
    return keys


# the float model's parameters + its adapter chain again (21,679,104 / 9,153,216) + linear3 + linear4
# + the hashing GeM's p
OFFICIAL = {
    "selavpr++-rerank": ("vitl14", 331_295_745 + 21_679_104 + 1024 * 1025 + 512 * 1025 + 1,
                         "SelaVPRplusplus_large_rerank.pth"),
    "selavpr++-base-rerank": ("vitb14", 97_899_201 + 9_153_216 + 768 * 769 + 512 * 769 + 1,
                              "SelaVPRplusplus_base_rerank.pth"),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(OFFICIAL))
def test_two_branch_sizes_and_strict_keys(name, tmp_path):
    arch, params, file = OFFICIAL[name]
    keys = rerank_keys(arch)
    model, card = build(name), get_card(name)
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == keys
    buffers = sum(b.numel() for b in model.buffers())
    assert sum(p.numel() for p in model.parameters()) == params == count(keys) - buffers
    assert model.descriptor_dim == card.descriptor_dim == 512 and card.image_size == (322, 322)
    assert (
        card.weights.url == "https://huggingface.co/fenglu96/SelaVPRplusplus/resolve/main/" + file
    )
    state = random_state(keys, seed=3)
    torch.save({"model_state_dict": {f"module.{k}": v for k, v in state.items()}}, tmp_path / "w")
    loaded = build(name, weights=str(tmp_path / "w"))
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in state.items())
    state.pop("linear4.bias")
    torch.save({"model_state_dict": state}, tmp_path / "short.pth")
    with pytest.raises(VPRBenchError, match="1 missing key"):
        build(name, weights=str(tmp_path / "short.pth"))


def test_binary_codes_and_float_features_are_the_official_branches(tmp_path):
    """ViT-B: y and z both start as the embeddings and after block i take y += adapters[i](y + x),
    z += adapters_hashing[i](z + x); the code is sign(L2(linear4(GeM(L2(linear3(norm(z))))))) as +-1,
    the re-ranking feature the float model's head on norm(y)."""
    torch.manual_seed(0)
    keys = rerank_keys("vitb14")
    torch.save({"model_state_dict": random_state(keys, seed=5)}, tmp_path / "w.pth")
    model = build("selavpr++-base-rerank", weights=str(tmp_path / "w.pth")).eval()
    s = {k: v.detach() for k, v in model.state_dict().items()}
    x = torch.rand(2, 3, 56, 56)
    with torch.no_grad():
        steps = list(vit_blocks(model.backbone, x))
        y, z = steps[0].clone(), steps[0].clone()
        for index in range(12):
            y = y + multiconv(s, f"backbone.adapters.{index}.", y + steps[index + 1], 4)
            z = z + multiconv(s, f"backbone.adapters_hashing.{index}.", z + steps[index + 1], 4)

        def head(tokens, first, second, p):
            t = F.layer_norm(tokens, (768,), s["backbone.norm.weight"], s["backbone.norm.bias"],
                             eps=1e-6)  # fmt: skip
            g = F.linear(t[:, 1:].reshape(2, 4, 4, 768), s[first + ".weight"], s[first + ".bias"])
            g = F.normalize(g.permute(0, 3, 1, 2), p=2, dim=1)
            g = F.avg_pool2d(g.clamp(min=1e-6).pow(s[p]), (4, 4)).pow(1.0 / s[p])[:, :, 0, 0]
            return F.normalize(F.linear(g, s[second + ".weight"], s[second + ".bias"]), dim=-1)

        code = head(z, "linear3", "linear4", "aggregation_hashing.1.p")
        code = (code >= 0) * 1.0 + (code < 0) * -1.0  # STE_binary.forward
        torch.testing.assert_close(model(x), code)
        float_features = head(y, "linear1", "linear2", "aggregation.1.p")
        torch.testing.assert_close(model.local_features(x), float_features, rtol=1e-4, atol=1e-5)
        # the float branch is the standard model's: the same weights give its descriptor
        standard = build("selavpr++-base").eval()
        standard.load_state_dict({k: v for k, v in s.items() if k in standard.state_dict()})
        torch.testing.assert_close(standard(x), model.local_features(x))
    assert model.output_normalised and set(model(x).unique().tolist()) <= {-1.0, 1.0}
    with pytest.raises(VPRBenchError, match="two-branch model"):
        standard.local_features(x)


def test_exact_search_on_the_codes_is_the_binary_flat_index():
    """L2 on +-1 codes is 4 x Hamming, exact in float32: the same neighbours, ties by index, as
    test_rerank.py's faiss.IndexBinaryFlat(512) over np.packbits((code + 1) // 2)."""
    import faiss

    from vprbench.evaluate.search import exact_search

    rng = np.random.default_rng(0)
    db = rng.choice([-1.0, 1.0], size=(600, 512)).astype(np.float32)
    db[300:320] = db[0]  # exact ties
    queries = rng.choice([-1.0, 1.0], size=(20, 512)).astype(np.float32)
    queries[:5] = db[0]
    index = faiss.IndexBinaryFlat(512)
    index.add(np.packbits(((db + 1) // 2).astype(np.uint8), axis=1))
    hamming, official = index.search(
        np.packbits(((queries + 1) // 2).astype(np.uint8), axis=1), 100
    )
    indices, distances = exact_search(db, queries, 100, np.ones(len(db), bool))
    np.testing.assert_array_equal(indices, official)
    np.testing.assert_array_equal(distances, 4 * hamming)


def test_float_rerank_by_hand():
    reranker = RERANKERS["selavpr++-base"]
    assert (reranker.model, reranker.top_k, reranker.local_shape) == ("selavpr++-base-rerank",
                                                                       100, (2048,))  # fmt: skip
    query = np.zeros(2048, np.float32)
    query[0] = 1
    candidates = np.zeros((3, 2048), np.float32)
    candidates[0, 1] = 1  # distance sqrt(2)
    candidates[1, 0] = 1  # 0
    candidates[2, :2] = 0.6, 0.8  # sqrt(0.16 + 0.64) = 0.894
    scores = reranker.score(query, candidates)
    np.testing.assert_allclose(scores, [np.sqrt(2), 0.0, np.sqrt(0.8)], rtol=1e-6)
    assert reranker.order(scores).tolist() == [1, 2, 0]


def test_evaluate_the_two_branch_model_end_to_end(tiny_dataset, capsys, monkeypatch):
    """The binary stage, then --rerank on 12 + 6 generated images (random weights, 56 x 56): the
    record says the descriptors are not unit length and which stage each recall is."""
    import json

    from tests.test_cli import run

    argv = ["evaluate", "--model", "selavpr++-base-rerank", "--dataset", "tiny",
            "--image-size", "56", "56", "--k", "1,5", "--json"]  # fmt: skip
    code, out, err = run([*argv, "--metrics", "auc-pr"], capsys, monkeypatch)
    assert code == 0, err
    binary = json.loads(out)
    assert "not unit length" in binary["settings"]["search"]["metric"]
    assert "not unit length" in binary["results"]["metrics"]["similarity"]
    with np.load(binary["files"]["predictions"]) as z:  # squared L2 of +-1 codes: 4 x Hamming
        assert np.all(z["distances"] % 4 == 0) and z["distances"].max() <= 4 * 512
    code, out, err = run([*argv, "--rerank", "selavpr++-base"], capsys, monkeypatch)
    assert code == 0, err
    record = json.loads(out)
    assert record["results"]["recall_global"] == binary["results"]["recall"]
    entry = record["settings"]["rerank"]
    # all 12 database images re-ranked (the official 100, fewer saved)
    assert (entry["name"], entry["k"], entry["local_bytes_per_image"]) == ("selavpr++-base", 12,
                                                                           2048 * 4)  # fmt: skip
