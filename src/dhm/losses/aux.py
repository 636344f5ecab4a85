"""Deep supervision with companion objectives (DSN, Lee et al., 2015): cross-entropy on every auxiliary head,
weighted by a factor that decays over training and stops at an epoch.

``weight_k(t) = w_k * (1 - t / stop)`` for ``decay="linear"`` (``w_k`` for ``"none"``) while ``t < stop``, then 0,
where ``t`` is the fractional epoch and ``w_k`` the weight of auxiliary head k (one weight for all, or one per head,
DSN's alpha_m); ``stop = 0`` keeps the terms for the whole run (and then ``"linear"`` is not
allowed: it needs a horizon). The main head's cross-entropy is a separate ``ce`` term. ``loss="squared_hinge"``
puts DSN's authors' squared hinge (:mod:`dhm.losses.hinge`) in place of the cross-entropy.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .hinge import squared_hinge
from .kl import fp32
from .terms import TERMS, Term

DECAYS = ("linear", "none")
HEAD_LOSSES = {
    "ce": ("ce", lambda z, y: F.cross_entropy(fp32(z), y)),
    "squared_hinge": ("hinge", squared_hinge),
}


@TERMS.register("ce_aux")
class AuxCrossEntropy(Term):
    """Cross-entropy (or the squared hinge) on every head but the main one, each times its decaying companion
    weight. Logs ``ce/<head>`` (``hinge/<head>``) per auxiliary head and ``aux_weight`` (the weights' mean at this point of training)."""

    def __init__(
        self,
        weight: float | Sequence[float] = 1.0,
        decay: str = "linear",
        stop: float = 0.0,
        names: Sequence[str] | None = None,
        loss: str = "ce",
    ) -> None:
        super().__init__()
        if loss not in HEAD_LOSSES:
            raise ValueError(f"a companion's loss is one of {', '.join(HEAD_LOSSES)}, got {loss!r}")
        self.key, self.head_loss = HEAD_LOSSES[loss]
        weights = tuple(float(w) for w in weight) if isinstance(weight, (list, tuple)) else (float(weight),)
        if not weights:
            raise ValueError("loss.aux_weight needs a weight (one for every auxiliary head, or one per head)")
        if names is not None:  # the model's heads are known: a list of weights must match them now
            self._weights_for(weights, len(names))
        if decay not in DECAYS:
            raise ValueError(f"the companion weight's decay is one of {', '.join(DECAYS)}, got {decay!r}")
        if decay == "linear" and stop <= 0:
            raise ValueError("a linearly decaying companion weight needs loss.aux_stop > 0 (the epoch it reaches 0)")
        self.weights, self.decay, self.stop = weights, decay, stop
        self.register_buffer("factor", torch.tensor(1.0), persistent=False)  # a tensor: no recompile per epoch
        self.progressed = decay == "none" and stop <= 0  # a constant weight needs no progress

    def set_progress(self, epoch: float) -> None:
        self.progressed = True
        self.factor.fill_(self.at(epoch))

    @staticmethod
    def _weights_for(weights: tuple[float, ...], heads: int) -> tuple[float, ...]:
        """One weight per auxiliary head of a model with ``heads`` heads (the main one included)."""
        if len(weights) == 1:
            return weights * (heads - 1)
        if len(weights) != heads - 1:
            raise ValueError(
                f"loss.aux_weight has {len(weights)} weights for {heads - 1} auxiliary heads: give one, or one per "
                "head in fork order"
            )
        return weights

    def at(self, epoch: float) -> float:
        """The factor of every companion weight at fractional ``epoch`` (1 at the start)."""
        if self.stop > 0 and epoch >= self.stop:
            return 0.0
        return 1.0 - epoch / self.stop if self.decay == "linear" else 1.0

    def forward(self, heads, names, target, out, extra=None):
        if len(heads) < 2:
            return None
        if not self.progressed:
            raise RuntimeError("the companion weight decays over training: call set_progress(epoch) every step")
        weights = self._weights_for(self.weights, len(heads))
        total = None
        for k in range(1, len(heads)):
            ce = self.head_loss(heads[k], target)
            out[f"{self.key}/{names[k]}"] = ce
            total = weights[k - 1] * ce if total is None else total + weights[k - 1] * ce
        out["aux_weight"] = self.factor.detach() * (sum(weights) / len(weights))
        return self.factor * total
