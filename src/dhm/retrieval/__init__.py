"""Retrieval (instance recognition): distances between embeddings and the re-ID metrics (CMC, mAP, mINP)."""

from .distance import distance
from .metrics import evaluate, evaluate_features

__all__ = ["distance", "evaluate", "evaluate_features"]
