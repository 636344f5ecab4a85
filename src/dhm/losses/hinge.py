"""The squared hinge loss of DSN's authors (Lee et al. 2015; s9xie/DSN, src/caffe/layers/loss_layer.cpp, the
``squaredhingeloss`` layer with its C_ = 1): one-vs-all L2-SVM on a head's outputs,

    L = (1/N) sum_i sum_j max(0, 1 - t_ij z_ij)^2,   t_ij = +1 for the true class j = y_i, -1 otherwise.

``dsn-authors`` trains every head with it (docs/method.md section 8)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .kl import fp32
from .terms import TERMS, Term


def squared_hinge(z: Tensor, y: Tensor) -> Tensor:
    """The batch's squared hinge loss of logits ``z`` (N, C) against class indices ``y`` (N,)."""
    z = fp32(z)
    signs = torch.full_like(z, -1.0).scatter_(1, y[:, None], 1.0)
    return (1.0 - signs * z).clamp_min(0.0).pow(2).sum() / z.shape[0]


@TERMS.register("squared_hinge")
class SquaredHinge(Term):
    """The squared hinge loss on ``heads`` (``main``, ``all`` or names); logs ``hinge/<head>``."""

    def __init__(self, heads: str | Sequence[str] = "main") -> None:
        super().__init__()
        self.heads = heads if isinstance(heads, str) else tuple(heads)

    def forward(self, heads, names, target, out, extra=None):
        chosen = range(len(heads)) if self.heads == "all" else [0] if self.heads == "main" else None
        if chosen is None:
            chosen = [list(names).index(h) for h in self.heads]
        total = None
        for k in chosen:
            loss = squared_hinge(heads[k], target)
            out[f"hinge/{names[k]}"] = loss
            total = loss if total is None else total + loss
        return total
