"""Re-ranking stages: a global search's top-K re-ordered with local features, as a registry like the
models' (``evaluate --rerank NAME [--rerank-k K]``).

A re-ranker names the model whose local features it matches (its ``local_features(x)`` method), how
it scores a query's candidates, and how it orders them. The local features are extracted through the
descriptor cache (``LocalFeatures`` wraps the model: its flattened local map is the "descriptor", keyed
with ``features`` in the options, so it is cached, resumed and shared under torchrun like any
descriptor, and never computed twice) and read back a query's candidates at a time.

Scoring reads a query's candidates ``block`` at a time (``score`` gives each its raw score); ``combine``
turns the raw scores of all the candidates into the ones ``order`` sorts (Patch-NetVLAD standardises
them over the candidates).

Registered: ``selavpr`` (vprbench.rerank.selavpr), ``fol`` and ``fol-base`` (SelaVPR's matching with
FoL's cosine threshold, over FoL's discriminative-region features), and Patch-NetVLAD's three configs,
``patchnetvlad`` (performance.ini), ``patchnetvlad-speed`` and ``patchnetvlad-storage``
(vprbench.rerank.patchnetvlad), and SelaVPR++'s float re-ranking of its binary codes' top 100,
``selavpr++`` and ``selavpr++-base`` (vprbench.rerank.selavpr_plusplus).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from vprbench.errors import VPRBenchError


@dataclass(frozen=True)
class Reranker:
    name: str
    model: str  # the model card whose local features it matches
    description: str
    source: str  # the official files and lines
    top_k: int  # the official number of candidates re-ordered
    local_shape: tuple[int, ...]  # one image's local features
    score: Callable  # (query local [*local_shape], candidates [N, *local_shape], **options) -> [N, ...]
    order: Callable  # (scores [N]) -> positions of the candidates, best first
    options: dict[str, tuple] = field(default_factory=dict)  # option: allowed values, first default
    features: dict = field(default_factory=dict)  # keyword arguments of model.local_features
    block: int = 8  # candidates read and scored at a time
    combine: Callable | None = None  # (raw scores of all candidates) -> [N]; None: as they are
    libraries: tuple[str, ...] = ()  # modules whose version the record states (OpenCV's RANSAC)


RERANKERS: dict[str, Reranker] = {}
FOL_THRESHOLD = 0.7  # chenshunpeng/FoL test_FoL.py match_batch_tensor T2


def register_reranker(reranker: Reranker) -> Reranker:
    RERANKERS[reranker.name] = reranker
    return reranker


def get_reranker(name: str) -> Reranker:
    if name not in RERANKERS:
        raise VPRBenchError(
            f"--rerank: unknown re-ranker {name!r}; registered: {', '.join(sorted(RERANKERS))}"
        )
    return RERANKERS[name]


def patchnetvlad_reranker(name: str, model: str, config, pcs: int) -> Reranker:
    """A Patch-NetVLAD re-ranker for one of its configs (vprbench.rerank.patchnetvlad.PatchConfig)
    over the ``pcs``-d WPCA of ``model``."""
    from functools import partial

    from vprbench.rerank import patchnetvlad

    matcher = (
        "RANSAC on the patch centres" if config.matcher == "RANSAC" else "rapid spatial scoring"
    )
    sizes = ",".join(str(p) for p in config.patch_sizes)
    return Reranker(
        name=name,
        model=model,
        description=f"Patch-NetVLAD ({config.name}): mutual nearest {pcs}-d patch descriptors of "
        f"sizes {sizes}, {matcher}, over the global top-{patchnetvlad.TOP_K}",
        source="QVPR/Patch-NetVLAD patchnetvlad/models/patchnetvlad.py PatchNetVLAD.forward; "
        "feature_extract.py; patchnetvlad/models/local_matcher.py local_matcher, "
        "normalise_func; patchnetvlad/tools/patch_matcher.py; "
        f"patchnetvlad/configs/{config.name}",
        top_k=patchnetvlad.TOP_K,
        local_shape=(sum(config.patches()), pcs),
        score=partial(patchnetvlad.patch_scores, config),
        order=patchnetvlad.rerank_order,
        features={"patch_sizes": config.patch_sizes, "strides": config.strides},
        block=1,  # 46 MB a candidate in performance.ini
        combine=partial(patchnetvlad.combine, config),
        libraries=("cv2",) if config.matcher == "RANSAC" else (),
    )


def _register_official() -> None:
    from vprbench.rerank import patchnetvlad, selavpr, selavpr_plusplus

    register_reranker(Reranker(
        name="selavpr",
        model="selavpr",
        description="SelaVPR: mutual nearest neighbours of the 61x61x128 local features "
        "(LocalAdapt), over the global top-100",
        source="Lu-Feng/SelaVPR local_matching.py match_batch_tensor, local_sim; test.py rerank; "
        "parser.py --rerank_num 100, --dense_feature_map_size 61 61 128",
        top_k=selavpr.TOP_K,
        local_shape=selavpr.LOCAL_SHAPE,
        score=selavpr.mutual_matches,
        order=selavpr.rerank_order,
        options={"one_match": selavpr.ONE_MATCH},
        block=selavpr.CANDIDATES_PER_MATMUL,
    ))  # fmt: skip
    from functools import partial

    from vprbench.models.cards.fol import LOCAL_ROWS

    for name in ("fol", "fol-base"):
        register_reranker(Reranker(
            name=name,
            model=name,
            description=f"FoL: mutual nearest neighbours with cosine over {FOL_THRESHOLD} of the "
            f"128-d features of its 225 discriminative regions (up to {LOCAL_ROWS:,}), top 100",
            source="chenshunpeng/FoL test_FoL.py match_batch_tensor (T2=0.7), local_sim, rerank; "
            "network_FoL.py forward; aggregators/FoL.py forward (num_select 225); parser.py "
            "--recall_values (max 100)",
            top_k=100,
            local_shape=(LOCAL_ROWS, 128),
            score=partial(selavpr.mutual_matches, threshold=FOL_THRESHOLD),
            order=selavpr.rerank_order,
            options={"one_match": selavpr.ONE_MATCH},
            block=selavpr.CANDIDATES_PER_MATMUL,
        ))  # fmt: skip
    for name, dim in (("selavpr++", 4096), ("selavpr++-base", 2048)):
        register_reranker(Reranker(
            name=name,
            model=f"{name}-rerank",
            description=f"SelaVPR++: the Hamming top 100 of the 512-bit codes re-ordered by the L2 "
            f"distance of the {dim:,}-d float descriptors",
            source="Lu-Feng/SelaVPRplusplus test_rerank.py test_rerank (IndexBinaryFlat(512)), "
            "rerank; parser.py --recall_values; model/network.py (hashing and rerank on)",
            top_k=selavpr_plusplus.TOP_K,
            local_shape=(dim,),
            score=selavpr_plusplus.float_distances,
            order=selavpr_plusplus.rerank_order,
            block=selavpr_plusplus.TOP_K,  # small vectors: the official reads all 100 at once
        ))  # fmt: skip
    for name, model, config, pcs in (
        ("patchnetvlad", "netvlad-pca", patchnetvlad.PERFORMANCE, 4096),
        ("patchnetvlad-speed", "netvlad-pca512", patchnetvlad.SPEED, 512),
        ("patchnetvlad-storage", "netvlad-pca128", patchnetvlad.STORAGE, 128),
    ):
        register_reranker(patchnetvlad_reranker(name, model, config, pcs))


_register_official()
