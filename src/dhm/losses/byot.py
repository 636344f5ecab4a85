"""BYOT's loss (Zhang et al., "Be Your Own Teacher", 2019): the deepest head (the main one) teaches every
shallower head, by its softened predictions and by its feature.

    CE(z_0, y) + sum_{i>=1} [(1 - alpha) CE(z_i, y) + alpha T^2 KL(sg(p_0) || p_i)]
               + lambda sum_{i>=1} ||A_i f_i - sg(f_0)||

with p = softmax(z / T), T = 3, alpha = 0.3, lambda = 0.03 (the authors'); f_0 is the deepest head's pooled
feature and A_i f_i the shallow head's, through its hint map (:mod:`dhm.branches.byot`); ``||.||`` is the L2 norm
over the whole batch, as the authors' ``torch.dist``. The deepest head trains with its cross-entropy only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .kl import fp32
from .terms import TERMS, Term


@TERMS.register("byot")
class SelfTeaching(Term):
    """BYOT's loss over the heads (main = deepest) and their features. Logs ``ce/<head>``, ``kd`` (the KL sum,
    before alpha T^2) and ``hint`` (the feature term, before lambda)."""

    needs = ("features",)

    def __init__(
        self, alpha: float = 0.3, temperature: float = 3.0, hint: float = 0.03, t2: bool = True, detach: bool = True
    ) -> None:
        super().__init__()
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"byot's alpha mixes CE and KL: it must be in [0, 1], got {alpha}")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.alpha, self.temperature, self.hint, self.t2, self.detach = alpha, temperature, hint, t2, detach

    def forward(self, heads, names, target, out, extra=None):
        feats = (extra or {}).get("features")
        zs = [fp32(z) for z in heads]
        t = self.temperature
        deepest = zs[0].detach() if self.detach else zs[0]
        teacher, log_teacher = F.softmax(deepest / t, -1), F.log_softmax(deepest / t, -1)
        total = F.cross_entropy(zs[0], target)
        out[f"ce/{names[0]}"] = total
        kd_sum, hint_sum = zs[0].new_zeros(()), zs[0].new_zeros(())
        for k in range(1, len(zs)):
            ce = F.cross_entropy(zs[k], target)
            out[f"ce/{names[k]}"] = ce
            kd = (teacher * (log_teacher - F.log_softmax(zs[k] / t, -1))).sum(-1).mean()
            kd_sum = kd_sum + kd
            total = total + (1 - self.alpha) * ce + self.alpha * (t * t if self.t2 else 1.0) * kd
            if feats is not None and self.hint > 0:
                goal = fp32(feats[0]).detach() if self.detach else fp32(feats[0])
                hint_sum = hint_sum + torch.linalg.vector_norm(fp32(feats[k]) - goal)
        out["kd"], out["hint"] = kd_sum.detach(), hint_sum.detach()
        return total + self.hint * hint_sum
