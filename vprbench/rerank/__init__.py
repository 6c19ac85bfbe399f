"""Re-ranking stages: a global search's top-K re-ordered with local features, as a registry like the
models' (``evaluate --rerank NAME [--rerank-k K]``).

A re-ranker names the model whose local features it matches (its ``local_features(x)`` method), how
it scores a query's candidates, and how it orders them. The local features are extracted through the
descriptor cache (``LocalFeatures`` wraps the model: its flattened local map is the "descriptor", keyed
with ``features`` in the options, so it is cached, resumed and shared under torchrun like any
descriptor, and never computed twice) and read back a query's candidates at a time.

Registered: ``selavpr`` (vprbench.rerank.selavpr). Patch-NetVLAD's, FoL's and SelaVPR++'s stages are
not written yet.
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
    score: Callable  # (query local [*local_shape], candidates [N, *local_shape], **options) -> [N]
    order: Callable  # (scores [N]) -> positions of the candidates, best first
    options: dict[str, tuple] = field(default_factory=dict)  # option: allowed values, first default


RERANKERS: dict[str, Reranker] = {}


def register_reranker(reranker: Reranker) -> Reranker:
    RERANKERS[reranker.name] = reranker
    return reranker


def get_reranker(name: str) -> Reranker:
    if name not in RERANKERS:
        raise VPRBenchError(
            f"--rerank: unknown re-ranker {name!r}; registered: {', '.join(sorted(RERANKERS))}"
        )
    return RERANKERS[name]


def _register_official() -> None:
    from vprbench.rerank import selavpr

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
    ))  # fmt: skip


_register_official()
