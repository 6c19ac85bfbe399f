"""Patch-NetVLAD's re-ranking (QVPR/Patch-NetVLAD, git 39ab4e4): the global top-100 (feature_match.py
``max(n_values)``, configs ``n_values_all = 1,5,10,20,50,100``) re-ordered by matching the patch
descriptors of the query and each candidate (patchnetvlad/models/local_matcher.py ``local_matcher``,
patchnetvlad/tools/patch_matcher.py ``PatchMatcher``).

For each patch size: the mutual nearest neighbours of the two images' patch descriptors under
``torch_nn``'s distance sqrt(2 - 2 q.d + 1e-9) (first index on ties, as torch.min and torch.argmin),
then a score per candidate, negative and divided by the query's patch count:

- ``RANSAC`` (performance.ini): with more than 3 mutual matches, the inliers of
  ``cv2.findHomography(candidate points, query points, FM_RANSAC, 16 * stride * 1.5)`` over the patch
  centres in image space (``calc_keypoint_centers_from_patches``: VGG-16 conv5_3's receptive field 196,
  stride 16, padding 90); else 0.
- ``spatialApproximator`` (speed.ini, storage.ini), the rapid spatial scoring: the grid offsets
  (candidate - query) of the mutual matches, their absolute residuals from the mean offset in x and
  y, and the score -sum((xmax - rx)^2 + (ymax - ry)^2) with xmax, ymax the largest grid indices;
  with no mutual match, 0.

The per-size scores of the candidates are standardised over the candidates (mean, population std)
and summed with the config's ``patchweights2use`` (``normalise_func``), and the candidates sorted by
``np.argsort`` ascending (the most negative first). As in the official code, a patch size whose
scores are equal over all the candidates standardises to 0 / 0 = NaN, which the sum carries into every
candidate's score: that query's order is then ``np.argsort`` of all-NaN scores, whatever numpy's sort
makes of them (not the global order).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from vprbench.errors import VPRBenchError

MATCHERS = ("RANSAC", "spatialApproximator")
TOP_K = 100  # feature_match.py: max(n_values_all)
RF, STRIDE, PADDING = 196.0, 16.0, 90.0  # local_matcher.py calc_receptive_boxes, VGG-16 conv5_3


@dataclass(frozen=True)
class PatchConfig:
    """One of the official configs (patchnetvlad/configs/*.ini)."""

    name: str
    patch_sizes: tuple[int, ...]
    strides: tuple[int, ...]
    weights: tuple[float, ...]  # [feature_match] patchweights2use
    matcher: str
    image_size: tuple[int, int] = (480, 640)  # [feature_match] imageresizeh, imageresizew

    @property
    def grid(self) -> tuple[int, int]:
        """The conv5_3 map the config assumes: int(imageresize / 16), as local_matcher.py:91-92."""
        return int(self.image_size[0] / 16), int(self.image_size[1] / 16)

    def patches(self) -> tuple[int, ...]:
        """The number of patches of each size (Hout * Wout, local_matcher.py:97-98)."""
        h, w = self.grid
        return tuple(
            ((h - p) // s + 1) * ((w - p) // s + 1)
            for p, s in zip(self.patch_sizes, self.strides, strict=True)
        )


PERFORMANCE = PatchConfig("performance.ini", (2, 5, 8), (1, 1, 1), (0.45, 0.15, 0.4), "RANSAC")
SPEED = PatchConfig("speed.ini", (5,), (1,), (1.0,), "spatialApproximator")
STORAGE = PatchConfig("storage.ini", (5,), (1,), (1.0,), "spatialApproximator")


@lru_cache(maxsize=16)
def patch_positions(config: PatchConfig, size: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """(keypoints, indices), each [2, P] int: a patch's centre in image pixels (x, y) for RANSAC and
    its (column, row) on the patch grid for the rapid spatial scoring (local_matcher.py
    ``calc_keypoint_centers_from_patches``, including its loop over rows and columns by ``stride``).
    Computed once per config and size: do not modify them."""
    h, w = config.grid
    rows, cols = (h - size) // stride + 1, (w - size) // stride + 1
    keypoints = np.zeros((2, rows * cols), dtype=int)
    indices = np.zeros((2, rows * cols), dtype=int)

    def box(col: int, row: int) -> tuple[float, float, float, float]:  # x0, y0, x1, y1
        x0, y0 = STRIDE * col - PADDING, STRIDE * row - PADDING
        return x0, y0, x0 + RF - 1, y0 + RF - 1

    k = 0
    for i in range(0, rows, stride):
        for j in range(0, cols, stride):
            keypoints[0, k] = (box(j, i)[0] + box(j + size - 1, i)[2]) / 2
            keypoints[1, k] = (box(j, i)[1] + box(j, i + size - 1)[3]) / 2
            indices[:, k] = j, i
            k += 1
    return keypoints, indices


def mutual_nearest(query, candidate):
    """(fw, mutual): for the query's patches [Pq, D] and a candidate's [Pc, D] (torch tensors),
    ``fw`` [Pc] is each candidate patch's nearest query patch and ``mutual`` the candidate patches
    whose nearest query patch has them as its nearest (patch_matcher.py ``torch_nn`` and the
    ``np.argwhere(bw_inds[fw_inds] == arange)`` of both matchers)."""
    import torch

    dist = torch.sqrt(2 - 2 * torch.matmul(query, candidate.T) + 1e-9)  # [Pq, Pc]
    _, fw = torch.min(dist, 0)
    bw = torch.argmin(dist, 1)
    fw, bw = fw.cpu().numpy(), bw.cpu().numpy()
    return fw, np.flatnonzero(bw[fw] == np.arange(len(fw)))


def ransac_score(fw, mutual, keypoints, stride: int, query_patches: int) -> float:
    """patch_matcher.py ``compare_two_ransac`` for one patch size."""
    try:
        import cv2
    except ImportError as exc:
        raise VPRBenchError(
            "Patch-NetVLAD's RANSAC scoring needs OpenCV: pip install opencv-python-headless"
        ) from exc
    if len(mutual) <= 3:  # a homography needs four points
        return 0.0
    candidate_points = keypoints[:, mutual].T.astype(np.float32)
    query_points = keypoints[:, fw[mutual]].T.astype(np.float32)
    _, mask = cv2.findHomography(candidate_points, query_points, cv2.FM_RANSAC,
                                 ransacReprojThreshold=16 * stride * 1.5)  # fmt: skip
    # no homography found (degenerate points): the official code fails there (mask None); 0 here
    inliers = 0 if mask is None else int((mask.ravel() == 1).sum())
    return -inliers / query_patches


def spatial_score(fw, mutual, indices, query_patches: int) -> float:
    """patch_matcher.py ``compare_two_spatial`` (rapid spatial scoring) for one patch size."""
    if len(mutual) == 0:
        return 0.0
    offsets = indices[:, mutual] - indices[:, fw[mutual]]
    mean = offsets.mean(axis=1)
    rx, ry = np.abs(offsets[0] - mean[0]), np.abs(offsets[1] - mean[1])
    xmax, ymax = indices[0].max(), indices[1].max()
    return float(-((xmax - rx) ** 2 + (ymax - ry) ** 2).sum() / query_patches)


def patch_scores(config: PatchConfig, query, candidates, device: str = "cpu") -> np.ndarray:
    """[N, sizes] raw scores (``diffs``) of candidates [N, P, D] against the query's [P, D]: the
    patches of each size in turn, as ``local_features`` concatenates them."""
    import torch

    counts = config.patches()
    if query.shape[0] != sum(counts):
        raise VPRBenchError(
            f"{config.name}: {query.shape[0]} patches, expected {sum(counts)} for a "
            f"{config.image_size} image with patch sizes {config.patch_sizes}"
        )
    positions = [
        patch_positions(config, p, s)
        for p, s in zip(config.patch_sizes, config.strides, strict=True)
    ]
    bounds = np.r_[0, np.cumsum(counts)]
    dev = torch.device(device)
    q = torch.as_tensor(np.asarray(query, dtype=np.float32)).to(dev)
    out = np.zeros((len(candidates), len(counts)))
    for n, candidate in enumerate(np.asarray(candidates, dtype=np.float32)):
        c = torch.as_tensor(candidate).to(dev)
        for s, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
            fw, mutual = mutual_nearest(q[lo:hi], c[lo:hi])
            keypoints, indices = positions[s]
            if config.matcher == "RANSAC":
                out[n, s] = ransac_score(fw, mutual, keypoints, config.strides[s], hi - lo)
            else:
                out[n, s] = spatial_score(fw, mutual, indices, hi - lo)
    return out


def combine(config: PatchConfig, diffs: np.ndarray) -> np.ndarray:
    """local_matcher.py ``normalise_func``: the weighted sum of each size's standardised scores."""
    diffs = np.asarray(diffs, dtype=np.float64)
    if diffs.shape[1] != len(config.weights):
        raise ValueError("The number of patch weights must equal the number of patches used")
    with np.errstate(invalid="ignore", divide="ignore"):  # all-equal scores: NaN, as the official
        return sum(
            weight * (diffs[:, i] - diffs[:, i].mean()) / diffs[:, i].std()
            for i, weight in enumerate(config.weights)
        )


def rerank_order(scores: np.ndarray) -> np.ndarray:
    """local_matcher.py:168: ``np.argsort(diffs)``, ascending."""
    return np.argsort(scores)
