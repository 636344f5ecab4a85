"""Loss terms on the heads' embeddings (``extra["features"]``), for instance recognition:

* ``triplet``: batch-hard triplet loss (Hermans et al. 2017, as BoT trains): per anchor the farthest same-label
  and the nearest other-label sample in the batch by Euclidean distance; ``max(0, d_ap - d_an + margin)``, or
  the soft margin ``log(1 + exp(d_ap - d_an))`` with ``margin=0``. Needs P x K batches (``data.sampler=identity``).
* ``pair_dist``: embedding mimicking between heads: every ordered pair (teacher, student) of the pair graph
  makes the student's in-batch distance matrix of L2-normalised embeddings match the teacher's (mean squared
  difference, teacher detached), as VKD and AlignedReID's mutual loss do.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch.nn.functional as F
from torch import Tensor

from .kl import fp32, graph_weights
from .terms import TERMS, Term


def _chosen(heads: str | Sequence[str], names: Sequence[str]) -> list[int]:
    if heads == "all":
        return list(range(len(names)))
    if heads == "main":
        return [0]
    unknown = [h for h in heads if h not in names]
    if unknown:
        raise ValueError(f"embedding term on heads {unknown}: the model's heads are {list(names)}")
    return [names.index(h) for h in heads]


def euclidean(x: Tensor) -> Tensor:
    """In-batch Euclidean distances, (B, B), with a gradient at zero distance."""
    squared = x.pow(2).sum(1)
    return (squared[:, None] + squared[None] - 2.0 * x @ x.T).clamp_min(1e-12).sqrt()


@TERMS.register("triplet")
class BatchHardTriplet(Term):
    """Batch-hard triplet loss on the embeddings of ``heads`` (``all``, ``main`` or names); logs
    ``triplet/<head>``."""

    needs = ("features",)

    def __init__(self, heads: str | Sequence[str] = "all", margin: float = 0.3, weight: float = 1.0) -> None:
        super().__init__()
        if margin < 0:
            raise ValueError(f"triplet margin must be >= 0 (0 = soft margin), got {margin}")
        self.heads = heads if isinstance(heads, str) else tuple(heads)
        self.margin, self.weight = margin, weight

    def forward(self, heads, names, target, out, extra=None):
        features = extra["features"]
        same = target[:, None] == target[None]
        total = None
        for k in _chosen(self.heads, names):
            dist = euclidean(fp32(features[k]))
            hardest_positive = dist.masked_fill(~same, float("-inf")).amax(1)
            hardest_negative = dist.masked_fill(same, float("inf")).amin(1)
            gap = hardest_positive - hardest_negative
            loss = F.softplus(gap).mean() if self.margin == 0 else F.relu(gap + self.margin).mean()
            out[f"triplet/{names[k]}"] = loss
            total = loss if total is None else total + loss
        return self.weight * total if total is not None else None


@TERMS.register("pair_dist")
class PairDistance(Term):
    """Embedding mimicking over the pair graph (default every ordered pair): ``weight * sum_jk W[j, k]
    mean((D_k - D_j.detach())^2)`` with ``D`` the in-batch distance matrix of L2-normalised embeddings; logs
    ``emb`` (the weighted sum)."""

    needs = ("features",)

    def __init__(self, graph: Any = "all", weight: float = 1.0, detach: bool = True) -> None:
        super().__init__()
        self.graph, self.weight, self.detach = graph, weight, detach

    def forward(self, heads, names, target, out, extra=None):
        if len(names) < 2:
            return None
        weights = graph_weights(self.graph, names)
        dists = [euclidean(F.normalize(fp32(f), dim=1)) for f in extra["features"]]
        total = None
        for j in range(len(names)):
            for k in range(len(names)):
                if weights[j, k] != 0:
                    teacher = dists[j].detach() if self.detach else dists[j]
                    part = float(weights[j, k]) * (dists[k] - teacher).pow(2).mean()
                    total = part if total is None else total + part
        if total is None:
            return None
        out["emb"] = total.detach()
        return self.weight * total
