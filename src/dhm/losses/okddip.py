"""OKDDip's loss (Chen et al., "Online Knowledge Distillation with Diverse Peers", AAAI 2020): m peers (the
branches) each learn from their own attention-weighted mix of the peers' predictions, and the leader (the main
head, the one deployed) from the peers' mean.

    sum_k CE(z_k, y) + w(t) T^2 [ sum_a (1/B) sum_b KL(t_a || p_a) + (1/B) sum_b KL(mean_a p_a || p_leader) ]

with p = softmax(z / T), t_a = sum_b alpha_ab p_b (alpha: the model's attention over the peers, from shared query
and key projections of their pooled features), T = 3 and the ramp-up w(t) of ONE. The authors' code does not
detach the targets (so the attention learns through them): ``detach=False`` by default, ``loss.detach`` switches.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..dynamic import rampup_weight
from .kl import fp32
from .terms import TERMS, Term


def _kl(target: torch.Tensor, log_student: torch.Tensor) -> torch.Tensor:
    """Batch mean of KL(target || student) for probabilities ``target`` and log-probabilities ``log_student``."""
    return (target * (target.clamp_min(1e-30).log() - log_student)).sum(-1).mean()


@TERMS.register("okddip")
class DiversePeers(Term):
    """OKDDip over the heads (main = leader, then the peers) and the model's attention. Logs ``ce/<head>``,
    ``kd_peers`` and ``kd_leader`` (before w(t) T^2)."""

    needs = ("features", "attention")  # asked for by name: the okddip layout's extra gives it

    def __init__(
        self,
        temperature: float = 3.0,
        detach: bool = False,
        rampup_epochs: float = 0.0,
        rampup: str = "sigmoid",
        t2: bool = True,
    ) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature, self.detach, self.t2 = temperature, detach, t2
        self.rampup_epochs, self.rampup = rampup_epochs, rampup
        rampup_weight(rampup, 0.0, rampup_epochs)
        self.register_buffer("ramp", torch.tensor(rampup_weight(rampup, 0.0, rampup_epochs)), persistent=False)
        self.progressed = rampup_epochs <= 0

    def set_progress(self, epoch: float) -> None:
        self.progressed = True
        self.ramp.fill_(rampup_weight(self.rampup, epoch, self.rampup_epochs))

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
        peers = torch.stack([F.softmax(z / t, -1) for z in zs[1:]], 1)  # (B, m, C)
        mixed = attention.to(peers.dtype) @ peers  # (B, m, C): t_a = sum_b alpha_ab p_b
        mean = peers.mean(1)
        if self.detach:
            mixed, mean = mixed.detach(), mean.detach()
        kd_peers = sum(_kl(mixed[:, a], F.log_softmax(zs[a + 1] / t, -1)) for a in range(len(zs) - 1))
        kd_leader = _kl(mean, F.log_softmax(zs[0] / t, -1))
        out["kd_peers"], out["kd_leader"] = kd_peers.detach(), kd_leader.detach()
        scale = t * t if self.t2 else 1.0
        return total + self.ramp * scale * (kd_peers + kd_leader)
