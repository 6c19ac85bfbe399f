"""A model's local features as the descriptor the extraction caches (for a re-ranker)."""

from __future__ import annotations

from math import prod

from vprbench.errors import VPRBenchError
from vprbench.models.base import VPRModel
from vprbench.rerank import Reranker


class LocalFeatures(VPRModel):
    """A model whose "descriptor" is its flattened local feature map (``model.local_features``):
    cached like descriptors, under a key that says so (``features`` in the options)."""

    output_normalised = True  # per position, by the model: extraction must not normalise it whole

    def __init__(self, model: VPRModel, reranker: Reranker) -> None:
        super().__init__()
        if not hasattr(model, "local_features"):
            raise VPRBenchError(f"model '{model.card.name}' has no local features to re-rank with")
        self.inner = model
        self.card = model.card
        self.options = {**model.options, "features": f"local:{reranker.name}"}
        self.weights_info = model.weights_info
        self.batch_dependent = model.batch_dependent
        self.descriptor_dim = prod(reranker.local_shape)
        self.features = dict(reranker.features)

    def forward(self, x):
        return self.inner.local_features(x, **self.features).flatten(1)
