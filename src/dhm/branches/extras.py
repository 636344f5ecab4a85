"""Modules a branch layout adds to a branched model beside its heads (``EXTRAS``), run generically by
:class:`~dhm.branches.model.DHMModel` after the heads and dropped at deployment with the branches:

* ``gate`` (ONE's, ``model.branches=one:m``): the fork's pooled features -> linear -> BN -> ReLU -> softmax over the
  heads; its weighted sum of the heads' logits is one more head, named ``gate``;
* ``attention`` (OKDDip's, ``model.branches=okddip:m``): shared query and key projections of the branches' (the
  peers') pooled features; its (B, m, m) softmax weights are the output ``attention``, which a loss term asks for
  by name (``needs = ("features", "attention")``).

An extra is built by ``factory(plan, fork_stages, num_heads)`` and called as ``extra(fork_feats, logits, pooled)``
(the stage outputs by stage index, the heads' logits, their pooled features when the model returns features); it
returns named tensors: those in its ``heads`` become heads (appended to the logits), the others outputs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from ..registry import Registry
from .plan import StagePlan


class Extra(nn.Module):
    """Base class of the extras: ``heads`` are the names of the outputs that are heads, ``features`` whether it
    reads the heads' pooled features (the model then returns them)."""

    heads: tuple[str, ...] = ()
    features = False

    def forward(self, fork_feats: dict[int, Tensor], logits: Sequence[Tensor], pooled: Sequence[Tensor]):
        raise NotImplementedError


EXTRAS: Registry[Callable[[StagePlan, Sequence[int], int], Extra]] = Registry("branch extra")


@EXTRAS.register("gate")
class Gate(nn.Sequential):
    """ONE's gate over the heads, reading the features at the branches' common fork (its layers under ``gate.0``
    to ``gate.5``, as checkpoints have always named them)."""

    heads = ("gate",)
    features = False

    def __init__(self, plan: StagePlan, fork_stages: Sequence[int], num_heads: int) -> None:
        if len(set(fork_stages)) != 1:
            raise ValueError("a gated ensemble (ONE) needs every branch to fork at the same stage")
        channels = plan.stages[fork_stages[0]].channels
        super().__init__(
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(channels, num_heads),
            nn.BatchNorm1d(num_heads),
            nn.ReLU(),
            nn.Softmax(dim=1),
        )
        self.fork = fork_stages[0]

    def forward(self, fork_feats, logits, pooled):
        if pooled:
            raise ValueError("a gated ensemble (ONE) gives logits only; its method reads no features")
        weights = super().forward(fork_feats[self.fork])  # (B, H)
        return {"gate": sum(weights[:, k : k + 1] * z for k, z in enumerate(logits))}


@EXTRAS.register("attention")
class PeerAttention(Extra):
    """OKDDip's attention of the peers (the branches) over each other, from shared query and key projections
    ``Linear(C, C // 8, bias=False)`` of their pooled features, as the authors' models (resnet_GL.py: ``factor=8``)."""

    features = True
    factor = 8  # the projections' width is C // factor (the authors' default)

    def __init__(self, plan: StagePlan, fork_stages: Sequence[int], num_heads: int) -> None:
        super().__init__()
        dim = plan.stages[-1].channels
        width = max(1, dim // self.factor)
        self.query, self.key = nn.Linear(dim, width, bias=False), nn.Linear(dim, width, bias=False)

    def forward(self, fork_feats, logits, pooled):
        peers = torch.stack(list(pooled[1:]), 1)
        scores = self.query(peers) @ self.key(peers).transpose(1, 2)
        return {"attention": scores.softmax(-1)}  # (B, m, m): softmax over b of q_a . k_b
