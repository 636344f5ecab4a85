"""Retrieval (instance recognition): distances between embeddings, the re-ID metrics (CMC, mAP, mINP) and
k-reciprocal re-ranking."""

from .distance import distance
from .metrics import evaluate, evaluate_features
from .rerank import rerank

__all__ = ["distance", "evaluate", "evaluate_features", "rerank"]
