"""Re-ranking stages: a global search's top-K re-ordered with local features (issue 27, in progress:
SelaVPR's mutual-nearest-neighbour score and local branch so far; the registry, the local-feature
cache and ``evaluate --rerank`` are not written yet)."""
