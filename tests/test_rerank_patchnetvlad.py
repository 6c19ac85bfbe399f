"""Patch-NetVLAD's re-ranking against the official formulas, worked out by hand (issue 27, part):
QVPR/Patch-NetVLAD patchnetvlad/models/local_matcher.py, patchnetvlad/tools/patch_matcher.py."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from vprbench.rerank import RERANKERS, patchnetvlad_reranker
from vprbench.rerank import patchnetvlad as pnv

# a 96 x 128 image: a 6 x 8 conv5_3 grid, 2 x 2 patches at stride 1: 5 rows x 7 columns = 35 patches
RANSAC = pnv.PatchConfig("test", (2,), (1,), (1.0,), "RANSAC", image_size=(96, 128))
SPATIAL = pnv.PatchConfig("test", (2,), (1,), (1.0,), "spatialApproximator", image_size=(96, 128))
P, D = 35, 70  # query patch i is e_i; "unmatched" patches are e_(35 + i), sqrt(2) from every query


def e(i: int) -> np.ndarray:
    out = np.zeros(D, dtype=np.float32)
    out[i] = 1.0
    return out


def patch(col: int, row: int) -> int:
    return row * 7 + col


QUERY = np.stack([e(i) for i in range(P)])
SAME = QUERY.copy()
# candidate patch (c, r) is the query's (c + 1, r): the view moved one patch (16 px) to the right;
# column 6 matches nothing
SHIFTED = np.stack([e(patch(c + 1, r)) if c < 6 else e(P + patch(c, r))
                    for r in range(5) for c in range(7)])  # fmt: skip
# as SHIFTED, but candidate (0, 4) is the query's (0, 0): 66 px from where the shift puts it
OUTLIER = SHIFTED.copy()
OUTLIER[patch(0, 4)] = e(patch(0, 0))
NOTHING = np.stack([e(P + i) for i in range(P)])


def test_the_configs_and_patch_centres_are_the_official_ones():
    assert pnv.PERFORMANCE.patches() == (29 * 39, 26 * 36, 23 * 33)  # 30 x 40 at 480 x 640
    assert (pnv.PERFORMANCE.weights, pnv.PERFORMANCE.matcher) == ((0.45, 0.15, 0.4), "RANSAC")
    assert RERANKERS["patchnetvlad"].local_shape == (2826, 4096)
    assert RERANKERS["patchnetvlad-speed"].local_shape == (936, 512)
    assert RERANKERS["patchnetvlad-storage"].local_shape == (936, 128)
    assert RERANKERS["patchnetvlad-speed"].model == "netvlad-pca512"
    keypoints, indices = pnv.patch_positions(pnv.PERFORMANCE, 2, 1)
    # receptive box of conv5_3 position (x, y): 16x - 90 .. 16x - 90 + 195; a 2 x 2 patch's centre
    # is the middle of its first box's start and its last box's end: (-90 + 121) / 2 = 15.5 -> 15
    assert keypoints[:, 0].tolist() == [15, 15] and indices[:, 0].tolist() == [0, 0]
    assert keypoints[:, 1].tolist() == [31, 15] and indices[:, 1].tolist() == [1, 0]
    assert keypoints[:, -1].tolist() == [16 * 38 + 15, 16 * 28 + 15]  # 623, 463
    assert indices[:, -1].tolist() == [38, 28]
    keypoints, _ = pnv.patch_positions(pnv.PERFORMANCE, 8, 1)
    assert keypoints[:, 0].tolist() == [(-90 + 16 * 7 - 90 + 195) // 2] * 2  # 63


def test_mutual_nearest_patches_by_hand():
    fw, mutual = pnv.mutual_nearest(torch.tensor(QUERY), torch.tensor(SHIFTED))
    assert fw[patch(0, 0)] == patch(1, 0) and fw[patch(5, 4)] == patch(6, 4)
    assert mutual.tolist() == [patch(c, r) for r in range(5) for c in range(6)]
    # nothing matches: every distance is sqrt(2), the nearest is the first (torch.min, argmin), and
    # candidate 0 <-> query 0 is then mutual
    fw, mutual = pnv.mutual_nearest(torch.tensor(QUERY), torch.tensor(NOTHING))
    assert fw.tolist() == [0] * P and mutual.tolist() == [0]


def test_rapid_spatial_scoring_by_hand():
    """-sum((xmax - |dx - mean dx|)^2 + (ymax - |dy - mean dy|)^2) / query patches; xmax 6, ymax 4."""
    scores = pnv.patch_scores(SPATIAL, QUERY, np.stack([SAME, SHIFTED, OUTLIER, NOTHING]))[:, 0]
    # SAME: 35 matches, every offset 0: 35 x (36 + 16) / 35
    # SHIFTED: 30 matches, all offset (-1, 0): residuals 0, 30 x 52 / 35
    # OUTLIER: 29 at (-1, 0), one at (0, 4): mean (-29/30, 4/30)
    mx, my = -29 / 30, 4 / 30
    outlier = 29 * ((6 - abs(-1 - mx)) ** 2 + (4 - abs(0 - my)) ** 2)
    outlier += (6 - abs(0 - mx)) ** 2 + (4 - abs(4 - my)) ** 2
    # NOTHING: the one tie-made match, offset 0: 52 / 35
    np.testing.assert_allclose(scores, [-52.0, -30 * 52 / 35, -outlier / 35, -52 / 35], rtol=1e-12)


def test_ransac_scoring_by_hand():
    """-(homography inliers) / query patches with more than 3 mutual matches, else 0."""
    pytest.importorskip("cv2")
    two = NOTHING.copy()
    two[0], two[1] = e(0), e(1)
    scores = pnv.patch_scores(RANSAC, QUERY, np.stack([SAME, SHIFTED, OUTLIER, two]))[:, 0]
    # SAME: the identity, 35 inliers; SHIFTED: a 16 px translation, 30; OUTLIER: 29 of its 30 (the
    # 30th is 66 px off, past the 16 x 1 x 1.5 = 24 px threshold); two: 2 matches, no homography
    np.testing.assert_allclose(scores, [-1.0, -30 / 35, -29 / 35, 0.0])


def test_normalise_func_and_order_by_hand():
    config = pnv.PatchConfig("two", (2, 5), (1, 1), (0.5, 0.5), "RANSAC")
    diffs = np.array([[-1.0, 0.0], [0.0, 0.0], [-0.5, -3.0]])
    # column 0: mean -0.5, std sqrt(1/6) -> -1.2247, 1.2247, 0; column 1: mean -1, std sqrt(2) ->
    # 0.7071, 0.7071, -1.4142; halves summed: -0.2588, 0.9659, -0.7071
    combined = pnv.combine(config, diffs)
    z0 = np.array([-0.5, 0.5, 0.0]) / np.sqrt(1 / 6)
    z1 = np.array([1.0, 1.0, -2.0]) / np.sqrt(2)
    np.testing.assert_allclose(combined, 0.5 * z0 + 0.5 * z1)
    assert pnv.rerank_order(combined).tolist() == [2, 0, 1]  # ascending: most negative first
    # a size whose scores are all equal standardises to 0 / 0: NaN, placed last by argsort
    flat = pnv.combine(pnv.PatchConfig("one", (2,), (1,), (1.0,), "RANSAC"), np.zeros((3, 1)))
    assert np.isnan(flat).all()
    with pytest.raises(ValueError, match="number of patch weights"):
        pnv.combine(config, np.zeros((3, 3)))


def test_patch_descriptors_by_definition():
    """Each patch: sum over its positions of a_k(x) (x - c_k) per cluster, intra-normalised, L2,
    then the WPCA (a matrix and a bias) and L2, for each size in turn, rows then columns."""
    from vprbench.models.netvlad import NetVLAD

    torch.manual_seed(0)
    model = NetVLAD(pca_dim=8).eval()
    x = torch.rand(1, 3, 64, 96)  # conv5_3: 4 x 6
    with torch.no_grad():
        local = model.local_features(x, (2, 3), (1, 2))
        f = torch.nn.functional.normalize(model.encoder(x), dim=1)[0].double()  # [512, 4, 6]
        a = torch.softmax(model.pool.conv.weight[:, :, 0, 0].double() @ f.reshape(512, -1), 0)
        a = a.reshape(64, 4, 6)
        c = model.pool.centroids.double()
        w, b = model.WPCA[0].weight[:, :, 0, 0].double(), model.WPCA[0].bias.double()
        expected = []
        for size, stride in ((2, 1), (3, 2)):
            for r0 in range(0, 4 - size + 1, stride):
                for c0 in range(0, 6 - size + 1, stride):
                    v = torch.zeros(64, 512, dtype=torch.float64)
                    for r in range(r0, r0 + size):
                        for col in range(c0, c0 + size):
                            v += a[:, r, col, None] * (f[:, r, col][None] - c)
                    v = torch.nn.functional.normalize(v, dim=1).flatten()
                    v = torch.nn.functional.normalize(v, dim=0)
                    expected.append(torch.nn.functional.normalize(w @ v + b, dim=0))
    assert local.shape == (1, 3 * 5 + 1 * 2, 8)
    torch.testing.assert_close(local[0].double(), torch.stack(expected), atol=2e-5, rtol=1e-4)
    with pytest.raises(Exception, match="exceed the 4 x 6 feature map"):
        model.local_features(x, (5,), (1,))


def test_rerank_predictions_reads_candidates_one_at_a_time():
    """The registered stage on a fake cache: candidates are read one per score call, the raw scores
    standardised over all of them, and the top-k re-ordered; ranks past k stay."""
    from vprbench.evaluate.rerank import rerank_predictions

    reads = []

    class Rows:
        def __init__(self, array):
            self.array = array

        def __getitem__(self, index):
            reads.append(np.atleast_1d(np.arange(len(self.array))[index]).tolist())
            return self.array[index]

    database = np.stack([NOTHING, OUTLIER, SAME, SHIFTED]).reshape(4, -1)
    queries = np.stack([QUERY, QUERY]).reshape(2, -1)
    local = SimpleNamespace(
        rows=lambda split: Rows(database) if split == "database" else queries,
        queries_valid=np.array([True, True]),
        key={"store": "fp32"},
    )
    reranker = patchnetvlad_reranker("test-pnv", "netvlad-pca", SPATIAL, D)
    indices = np.array([[0, 1, 2, 3], [3, 2, 1, 0]])
    out, permutation, cost = rerank_predictions(indices, local, reranker, k=3)
    # spatial scores: NOTHING -52/35, OUTLIER about -42.6, SAME -52, SHIFTED -44.6: query 0's first
    # 3 become SAME, OUTLIER, NOTHING (3 stays); query 1's SAME, SHIFTED, OUTLIER (0 stays)
    assert out.tolist() == [[2, 1, 0, 3], [2, 3, 1, 0]]
    assert permutation.tolist() == [[2, 1, 0, 3], [1, 0, 2, 3]]  # positions in each row
    assert reads == [[0], [1], [2], [3], [2], [1]]
    assert cost["k"] == 3 and cost["local_bytes_per_image"] == P * D * 4
    assert cost["seconds_per_query"] == pytest.approx(cost["seconds"] / 2)
