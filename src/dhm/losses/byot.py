"""BYOT's loss (Zhang et al., "Be Your Own Teacher", 2019): the deepest head (the main one) teaches every
shallower head, by its softened predictions and by its feature.

    CE(z_0, y) + sum_{i>=1} [(1 - alpha) CE(z_i, y) + alpha H(sg(p_0), p_i)] + lambda sum_{1<=i<n} ||A_i f_i - sg(f_0)||

as the authors' journal code (ArchipLab-LinfengZhang/pytorch-self-distillation-final, train.py): p = softmax(z / T),
H(p, q) = -(1/B) sum_b sum_c p log q the soft cross-entropy (its gradient is the KL's; its value the KL's plus the
teacher's entropy), no T^2 (``t2=True`` scales it by T^2, dhm's former default), T = 3, alpha = 0.3,
lambda = 0.03; f_0 is the deepest head's pooled feature and A_i f_i the shallow head's, through its hint map
(:mod:`dhm.branches.byot`); ``||.||`` is the L2 norm over the whole batch, as the authors' ``torch.dist``. Heads
1..n come in fork order (the shallowest first, the layout ``byot``'s order); the hint skips head n, the deepest
shallow head, as the authors' ``if index != 1`` over their deepest-first list (``hint_all=True`` gives it one too,
dhm's former form). The deepest head trains with its cross-entropy only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .kl import fp32
from .terms import TERMS, Term


@TERMS.register("byot")
class SelfTeaching(Term):
    """BYOT's loss over the heads (main = deepest) and their features. Logs ``ce/<head>``, ``kd`` (the soft
    cross-entropy sum, before alpha (T^2)) and ``hint`` (the feature term, before lambda)."""

    needs = ("features",)

    def __init__(
        self,
        alpha: float = 0.3,
        temperature: float = 3.0,
        hint: float = 0.03,
        t2: bool = False,
        detach: bool = True,
        hint_all: bool = False,
    ) -> None:
        super().__init__()
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"byot's alpha mixes CE and KL: it must be in [0, 1], got {alpha}")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.alpha, self.temperature, self.hint, self.t2, self.detach = alpha, temperature, hint, t2, detach
        self.hint_all = hint_all

    def forward(self, heads, names, target, out, extra=None):
        feats = (extra or {}).get("features")
        zs = [fp32(z) for z in heads]
        t = self.temperature
        deepest = zs[0].detach() if self.detach else zs[0]
        teacher = F.softmax(deepest / t, -1)
        total = F.cross_entropy(zs[0], target)
        out[f"ce/{names[0]}"] = total
        kd_sum, hint_sum = zs[0].new_zeros(()), zs[0].new_zeros(())
        for k in range(1, len(zs)):
            ce = F.cross_entropy(zs[k], target)
            out[f"ce/{names[k]}"] = ce
            kd = -(teacher * F.log_softmax(zs[k] / t, -1)).sum(-1).mean()
            kd_sum = kd_sum + kd
            total = total + (1 - self.alpha) * ce + self.alpha * (t * t if self.t2 else 1.0) * kd
            if feats is not None and self.hint > 0 and (k != len(zs) - 1 or self.hint_all):
                goal = fp32(feats[0]).detach() if self.detach else fp32(feats[0])
                hint_sum = hint_sum + torch.linalg.vector_norm(fp32(feats[k]) - goal)
        out["kd"], out["hint"] = kd_sum.detach(), hint_sum.detach()
        return total + self.hint * hint_sum
