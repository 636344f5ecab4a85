"""Retrieval (instance recognition): distances between embeddings, the re-ID metrics (CMC, mAP, mINP) and
k-reciprocal re-ranking."""

from .distance import distance
from .metrics import average_precisions, evaluate, evaluate_features
from .rerank import rerank

__all__ = ["average_precisions", "distance", "evaluate", "evaluate_features", "rerank"]
