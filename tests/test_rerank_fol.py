"""FoL's re-ranking against its official formulas, worked out by hand (issue 27, part):
chenshunpeng/FoL test_FoL.py ``match_batch_tensor``, network_FoL.py, aggregators/FoL.py."""

from __future__ import annotations

from math import floor

import numpy as np
import torch

from vprbench.rerank import RERANKERS
from vprbench.rerank.selavpr import mutual_matches

E = np.eye(5, dtype=np.float32)


def test_fol_matching_counts_mutual_matches_over_the_cosine_threshold():
    query = E[:4]  # e0 .. e3
    c2 = np.array([0, 0, 0.6, 0, 0.8], dtype=np.float32)  # cosine 0.6 with e2
    c1 = np.array([0, 0.6, 0, 0, 0.8], dtype=np.float32)  # cosine 0.6 with e1
    candidates = np.stack([
        E[:4],  # 4 mutual matches, cosine 1: 4
        # e0, e1 mutual at 1; e2 <-> c2 mutual at 0.6 (not over 0.7); e3 sees zeros only, its
        # nearest is candidate feature 0, whose nearest is e0: 2
        np.stack([E[0], E[1], c2, E[4]]),
        # only e0 <-> e0 is mutual: one match, which the official code scores 0 (a 0-d index)
        np.stack([E[0], E[4], E[4], E[4]]),
        # e0 mutual at 1, e1 <-> c1 mutual at 0.6: two matches, one over the threshold: 1
        np.stack([E[0], c1, E[4], E[4]]),
    ])  # fmt: skip
    fol = RERANKERS["fol"]
    assert fol.score(query, candidates).tolist() == [4.0, 2.0, 0.0, 1.0]
    assert fol.score(query, candidates, one_match="count").tolist() == [4.0, 2.0, 1.0, 1.0]
    # SelaVPR's score (no threshold) on the same: every mutual match counts
    assert mutual_matches(query, candidates).tolist() == [4.0, 3.0, 0.0, 2.0]
    assert (fol.model, fol.top_k, fol.local_shape) == ("fol", 100, (3600, 128))
    assert RERANKERS["fol-base"].model == "fol-base"


def test_replace_top_values_and_the_padding_rows():
    from vprbench.models.fol import local_rows, replace_top_values

    values = torch.arange(40, dtype=torch.float32)[None]  # rank int(0.05 x 40) = 2: the value 37
    out = replace_top_values(values)
    assert out[0, -3:].tolist() == [37.0, 37.0, 37.0] and out[0, :37].tolist() == list(range(37))
    assert values[0, -1] == 39  # a copy: the official one writes into its input
    assert [local_rows(h) for h in (141, 89, 75, 50, 40)] == [3600, 3600, 3500, 1000, 1600]


def test_fol_local_features_are_the_upsampled_regions():
    """fol-base at 322 x 322: a 23 x 23 patch grid, the upconvs' 89 x 89 map; the 225 regions
    nearest-upsampled cover sum over them of rows(r) x cols(c) positions, where source row k gets
    the output rows i with floor(i x 23 / 89) = k; the rest of the 3,600 rows is zeros."""
    from vprbench.models import create_model

    torch.manual_seed(0)
    model = create_model("fol-base").eval()
    x = torch.rand(1, 3, 322, 322)
    with torch.inference_mode():
        local = model.local_features(x)
        features, _, dustbin = model._tokens(x)
        regions = model.regions(features, dustbin)[0]
        up = model.upconv2(torch.relu(model.upconv(features)))[0].permute(1, 2, 0)
    assert local.shape == (1, 3600, 128) and int(regions.sum()) == 225
    per_source = np.bincount([floor(i * 23 / 89) for i in range(89)], minlength=23)
    rows, cols = np.nonzero(regions.numpy())
    covered = int(sum(per_source[r] * per_source[c] for r, c in zip(rows, cols, strict=True)))
    norms = local[0].norm(dim=-1)
    torch.testing.assert_close(norms[:covered], torch.ones(covered))
    assert (norms[covered:] == 0).all()
    # the first row is the first covered position of the map, row-major
    first = min((i, j) for i in range(89) for j in range(89)
                if regions[floor(i * 23 / 89), floor(j * 23 / 89)])  # fmt: skip
    torch.testing.assert_close(local[0, 0], torch.nn.functional.normalize(up[first], dim=0))
