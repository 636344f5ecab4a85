"""Distances between query and gallery embeddings, one block of queries at a time (the whole matrix of an
MSMT17-sized problem, 11,659 x 82,161, would take 3.8 GB)."""

from __future__ import annotations

from collections.abc import Iterator

import torch.nn.functional as F
from torch import Tensor

METRICS = ("euclidean", "cosine")


def distance(qf: Tensor, gf: Tensor, metric: str = "euclidean") -> Tensor:
    """The (Q, G) distance matrix of query features ``qf`` (Q, D) and gallery features ``gf`` (G, D), in float32.

    ``euclidean`` is the squared Euclidean distance (the ranking of the Euclidean one, as torchreid computes it);
    ``cosine`` is ``1 - cos``.

    Example:
        >>> d = distance(F.normalize(qf, dim=1), F.normalize(gf, dim=1))
    """
    if metric not in METRICS:
        raise ValueError(f"distance metric must be one of {', '.join(METRICS)}, got {metric!r}")
    if qf.ndim != 2 or gf.ndim != 2 or qf.shape[1] != gf.shape[1]:
        raise ValueError(f"features must be (Q, D) and (G, D) with one D, got {tuple(qf.shape)} and {tuple(gf.shape)}")
    qf, gf = qf.float(), gf.float()
    if metric == "cosine":
        return 1.0 - F.normalize(qf, dim=1) @ F.normalize(gf, dim=1).T
    dist = qf.pow(2).sum(1, keepdim=True) + gf.pow(2).sum(1)[None] - 2.0 * (qf @ gf.T)
    return dist.clamp_min_(0.0)


def query_blocks(queries: int, gallery: int, budget: int = 1 << 23) -> Iterator[slice]:
    """Slices of the queries such that one block's (block, G) working tensors stay near ``budget`` elements."""
    step = max(1, min(queries, budget // max(1, gallery)))
    for start in range(0, queries, step):
        yield slice(start, min(queries, start + step))
