"""Self-distillation without extra heads: CS-KD (class-wise, Yun et al. 2020) and PS-KD (progressive,
Kim et al. 2021), as loss terms on the main head.

* ``cskd``: the batch holds (anchor, partner) pairs, interleaved (the ``class_pairs`` sampler: every training
  image an anchor once per epoch, each paired with a random other image of its class). Loss = CE on the anchors
  + lambda T^2 KL(sg(p_partner) || p_anchor) at temperature T (authors: lambda 1, T 4). The partners get no
  gradient from the term; whether they run in the anchors' forward or in one of their own without gradient (the
  authors' way, the method's default) is the step's business (:mod:`dhm.steps.paired`).
* ``pskd``: soft targets (1 - a_t) onehot(y) + a_t p_{t-1}(x), where p_{t-1}(x) is the model's own softmax on the
  same training image in the previous epoch, kept in a per-sample memory (a persistent buffer: saved in the
  checkpoint, so a resume is exact; gathered across processes under DDP), and a_t = a_T * (epoch + 1) / epochs rises
  linearly to a_T = 0.8 (authors) at the last epoch. Loss = - sum_c target_c log p_c, batch mean.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ..gather import gather_equal
from .kl import fp32
from .terms import TERMS, Term


@TERMS.register("cskd")
class ClassWiseKD(Term):
    """CS-KD on the main head of an interleaved (anchor, partner) batch. Logs ``ce/main`` (anchors) and
    ``cskd`` (the KL, before lambda T^2)."""

    def __init__(self, weight: float = 1.0, temperature: float = 4.0, t2: bool = True, detach: bool = True) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.weight, self.temperature, self.t2, self.detach = weight, temperature, t2, detach

    def forward(self, heads, names, target, out, extra=None):
        z = fp32(heads[0])
        if z.shape[0] % 2:
            raise ValueError("cskd needs (anchor, partner) pairs: use data.sampler=class_pairs (an even batch)")
        anchor, partner, y = z[0::2], z[1::2], target[0::2]
        partner = partner.detach() if self.detach else partner
        ce = F.cross_entropy(anchor, y)
        t = self.temperature
        p_partner = F.softmax(partner / t, -1)
        kl = (p_partner * (F.log_softmax(partner / t, -1) - F.log_softmax(anchor / t, -1))).sum(-1).mean()
        out["ce/main"], out["cskd"] = ce, kl.detach()
        return ce + self.weight * (t * t if self.t2 else 1.0) * kl


@TERMS.register("pskd")
class ProgressiveSelfKD(Term):
    """PS-KD on the main head: reads and refreshes the per-sample memory of last epoch's predictions (by the
    batch's ``meta["index"]``). Logs ``ce/main`` (the soft-target loss) and ``pskd_alpha``."""

    def __init__(
        self, num_samples: int, num_classes: int, alpha: float = 0.8, epochs: int = 1, memory: str = "float32"
    ) -> None:
        super().__init__()
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"pskd's final alpha must be in [0, 1], got {alpha}")
        self.final, self.epochs = alpha, max(1, epochs)
        if memory not in ("float32", "float16"):
            raise ValueError(f"pskd's memory is float32 (the authors') or float16 (half the memory), got {memory!r}")
        # persistent: checkpointed, so a resume is exact; float16 halves it (probabilities keep 3 digits)
        dtype = torch.float16 if memory == "float16" else torch.float32
        self.register_buffer("memory", torch.zeros(num_samples, num_classes, dtype=dtype))
        # which samples have a prediction yet: an image the sampler has not drawn (a dropped last partial batch) is
        # taught by its one-hot label, as the authors' first epoch writes it, never by a zero row
        self.register_buffer("seen", torch.zeros(num_samples, dtype=torch.bool))
        self.register_buffer("alpha_now", torch.tensor(0.0), persistent=False)
        self.progressed = False

    def set_progress(self, epoch: float) -> None:
        self.progressed = True
        # per epoch, reaching the final alpha at the last epoch: alpha_T (e + 1) / E (lgcnsai/PS-KD-Pytorch main.py:323)
        self.alpha_now.fill_(self.final * (math.floor(epoch) + 1) / self.epochs)

    def forward(self, heads, names, target, out, extra=None):
        if not self.progressed:
            raise RuntimeError("pskd's alpha rises over training: call set_progress(epoch) every step")
        index = (extra or {}).get("meta", {}).get("index")
        if index is None:
            raise ValueError("pskd needs each sample's index (batch.meta['index']) to find its last prediction")
        z = fp32(heads[0])
        onehot = F.one_hot(target, z.shape[-1]).to(z.dtype)
        past = torch.where(
            self.seen.index_select(0, index)[:, None], self.memory.index_select(0, index).to(z.dtype), onehot
        )
        soft = (1 - self.alpha_now) * onehot + self.alpha_now * past
        loss = -(soft * F.log_softmax(z, -1)).sum(-1).mean()
        self._remember(index, F.softmax(z.detach(), -1))
        out["ce/main"], out["pskd_alpha"] = loss.detach(), self.alpha_now.detach().clone()
        return loss

    @torch.no_grad()
    def _remember(self, index: Tensor, probs: Tensor) -> None:
        """Write this step's predictions (every process's, under DDP) into the memory."""
        index, probs = gather_equal(index), gather_equal(probs)
        self.memory.index_copy_(0, index, probs.to(self.memory.dtype))
        self.seen.index_fill_(0, index, True)
