"""Deep supervision with companion objectives (DSN, Lee et al., 2015): cross-entropy on every auxiliary head,
weighted by a factor that decays over training and stops at an epoch.

``weight(t) = w * (1 - t / stop)`` for ``decay="linear"`` (``w`` for ``"none"``) while ``t < stop``, then 0, where
``t`` is the fractional epoch; ``stop = 0`` keeps the terms for the whole run (and then ``"linear"`` is not
allowed: it needs a horizon). The main head's cross-entropy is a separate ``ce`` term.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .kl import fp32
from .terms import TERMS, Term

DECAYS = ("linear", "none")


@TERMS.register("ce_aux")
class AuxCrossEntropy(Term):
    """Cross-entropy on every head but the main one, times the decaying companion weight. Logs ``ce/<head>``
    per auxiliary head and ``aux_weight``."""

    def __init__(self, weight: float = 1.0, decay: str = "linear", stop: float = 0.0) -> None:
        super().__init__()
        if decay not in DECAYS:
            raise ValueError(f"the companion weight's decay is one of {', '.join(DECAYS)}, got {decay!r}")
        if decay == "linear" and stop <= 0:
            raise ValueError("a linearly decaying companion weight needs loss.aux_stop > 0 (the epoch it reaches 0)")
        self.base, self.decay, self.stop = weight, decay, stop
        self.register_buffer("factor", torch.tensor(1.0), persistent=False)  # a tensor: no recompile per epoch
        self.progressed = decay == "none" and stop <= 0  # a constant weight needs no progress

    def set_progress(self, epoch: float) -> None:
        self.progressed = True
        self.factor.fill_(self.at(epoch))

    def at(self, epoch: float) -> float:
        """The companion weight at fractional ``epoch``."""
        if self.stop > 0 and epoch >= self.stop:
            return 0.0
        return self.base * (1.0 - epoch / self.stop) if self.decay == "linear" else self.base

    def forward(self, heads, names, target, out, extra=None):
        if len(heads) < 2:
            return None
        if not self.progressed:
            raise RuntimeError("the companion weight decays over training: call set_progress(epoch) every step")
        total = None
        for k in range(1, len(heads)):
            ce = F.cross_entropy(fp32(heads[k]), target)
            out[f"ce/{names[k]}"] = ce
            total = ce if total is None else total + ce
        out["aux_weight"] = self.factor.detach().clone()
        return self.factor * total
