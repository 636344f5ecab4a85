"""OKDDip's loss (Chen et al., "Online Knowledge Distillation with Diverse Peers", AAAI 2020), as the authors'
released code (DefangChen/OKDDip, train_GL.py and models/model_cifar/resnet_GL.py): m peers (the branches) each
learn from their own attention-weighted mix of the peers' logits, and the leader (the main head, the one deployed)
from the peers' mean logits.

    sum_k CE(z_k, y) + alpha w(t) T^2 [ sum_a KL(t_a || z_a) + KL(t_L || z_L) ]
    t_a = softmax(sum_b alpha_ab z_b / T) + eps,   t_L = softmax(mean_a z_a / T) + eps

with KL(t || z) = (1/B) sum_b sum_c t_c (log t_c - log softmax(z / T)_c) (the authors' ``KLDivLoss`` on a target
shifted by eps = 1e-7 and not renormalised), alpha_ab the model's attention over the peers (shared query and key
projections of their pooled features), T = 3, alpha = 1 and ONE's sigmoid ramp-up w(t) set once per epoch. The
authors do not detach the targets (the attention learns through them): ``detach=False`` by default, ``loss.detach``
switches. ``mix="probabilities"`` is dhm's earlier form (the peers' softened probabilities mixed, the leader's target
their mean), kept as a switch (``loss.options.mix``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..dynamic import check_rampup_per, ramp_epoch, rampup_weight
from .kl import fp32
from .terms import TERMS, Term

MIXES = ("logits", "probabilities")


def _kl(target: torch.Tensor, log_student: torch.Tensor) -> torch.Tensor:
    """Batch mean of sum_c target (log target - log_student), for a (shifted) probability ``target``."""
    return (target * (target.clamp_min(1e-30).log() - log_student)).sum(-1).mean()


@TERMS.register("okddip")
class DiversePeers(Term):
    """OKDDip over the heads (main = leader, then the peers) and the model's attention. Logs ``ce/<head>``,
    ``kd_peers`` and ``kd_leader`` (before alpha w(t) T^2)."""

    needs = ("features", "attention")  # asked for by name: the okddip layout's extra gives it

    def __init__(
        self,
        temperature: float = 3.0,
        detach: bool = False,
        rampup_epochs: float = 0.0,
        rampup: str = "sigmoid",
        t2: bool = True,
        alpha: float = 1.0,
        eps: float = 1e-7,
        rampup_per: str = "epoch",
        mix: str = "logits",
    ) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if mix not in MIXES:
            raise ValueError(f"okddip mixes the peers' logits or probabilities, got mix={mix!r}")
        self.temperature, self.detach, self.t2, self.alpha, self.eps, self.mix = (
            temperature,
            detach,
            t2,
            alpha,
            eps,
            mix,
        )
        self.rampup_epochs, self.rampup, self.rampup_per = rampup_epochs, rampup, check_rampup_per(rampup_per)
        self.register_buffer("ramp", torch.tensor(rampup_weight(rampup, 0.0, rampup_epochs)), persistent=False)
        self.progressed = rampup_epochs <= 0

    def set_progress(self, epoch: float) -> None:
        self.progressed = True
        self.ramp.fill_(rampup_weight(self.rampup, ramp_epoch(epoch, self.rampup_per), self.rampup_epochs))

    def targets(self, zs: list[torch.Tensor], attention: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The peers' targets (B, m, C) and the leader's (B, C), eps-shifted probabilities."""
        t = self.temperature
        peers = torch.stack(zs[1:], 1)  # (B, m, C) logits
        weights = attention.to(peers.dtype)
        if self.mix == "logits":
            mixed = F.softmax(weights @ peers / t, -1)  # t_a = softmax(sum_b alpha_ab z_b / T)
            mean = F.softmax(peers.mean(1) / t, -1)
        else:
            probs = F.softmax(peers / t, -1)
            mixed, mean = weights @ probs, probs.mean(1)
        return mixed + self.eps, mean + self.eps

    def forward(self, heads, names, target, out, extra=None):
        attention = (extra or {}).get("attention")
        if attention is None:
            raise ValueError("okddip needs the peers' attention: model.branches=okddip:m")
        if not self.progressed:
            raise RuntimeError("okddip's weight ramps up over training: call set_progress(epoch) every step")
        zs = [fp32(z) for z in heads]
        total = None
        for k, z in enumerate(zs):
            ce = F.cross_entropy(z, target)
            out[f"ce/{names[k]}"] = ce
            total = ce if total is None else total + ce
        t = self.temperature
        mixed, mean = self.targets(zs, attention)
        if self.detach:
            mixed, mean = mixed.detach(), mean.detach()
        kd_peers = sum(_kl(mixed[:, a], F.log_softmax(zs[a + 1] / t, -1)) for a in range(len(zs) - 1))
        kd_leader = _kl(mean, F.log_softmax(zs[0] / t, -1))
        out["kd_peers"], out["kd_leader"] = kd_peers.detach(), kd_leader.detach()
        scale = t * t if self.t2 else 1.0
        return total + self.alpha * self.ramp * scale * (kd_peers + kd_leader)
