"""Re-ranking stages against the official formulas on hand-made local features (issue 27, part)."""

from __future__ import annotations

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
