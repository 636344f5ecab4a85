"""Loss terms over a model's named head outputs, registered by name (``TERMS``), summed by an
:class:`~dhm.losses.objective.Objective`. A method (:mod:`dhm.methods`) lists its terms as data; each term
writes its logged components into the output dict and returns its contribution to the total.

* ``ce``: cross-entropy on chosen heads (all, the main one, or by name), optional label smoothing.
* ``pair_kl``: pairwise mimicking over a pair graph (an (H, H) weight matrix, :mod:`dhm.losses.kl`): temperature,
  T^2 scaling on or off, teacher detached or not, the stochastic pair-gradient laws and the weight ramp-ups.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..dynamic import PairLaw, check_rampup_per, parse_pair_law, ramp_epoch, rampup_weight
from ..registry import Registry
from .kl import SMOOTHING, fp32, graph_weights, pair_kl, pair_matrix

TERMS: Registry[type[Term]] = Registry("loss term")


class Term(nn.Module):
    """One loss term. ``forward(heads, names, target, out, extra)`` writes logged components into ``out`` and
    returns the term's contribution to the total loss (or ``None`` when it adds nothing). ``heads`` are the
    logits per head; ``extra`` holds what else the step has: ``features`` (each head's pooled feature, when the
    method asks the model for them) and ``meta`` (the batch's per-sample metadata: ``index``, ``camera``, ...).
    A term that needs features says so with ``needs = ("features",)``."""

    needs: tuple[str, ...] = ()  # model outputs beyond the logits this term reads (``features``)

    def set_progress(self, epoch: float) -> None:
        """Where training is (fractional epoch), for terms whose weight changes over the run."""

    def own_optimizer(self) -> torch.optim.Optimizer | None:
        """The optimizer of the term's own parameters (center loss: its centers), stepped by the engine after the
        model's; ``None`` for a term without parameters."""
        return None

    def forward(
        self,
        heads: Sequence[Tensor],
        names: Sequence[str],
        target: Tensor,
        out: dict[str, Tensor],
        extra: Mapping[str, Any] | None = None,
    ) -> Tensor | None:
        raise NotImplementedError


@TERMS.register("ce")
class CrossEntropy(Term):
    """Cross-entropy on ``heads``: ``"all"``, ``"main"`` or a list of head names; ``label_smoothing`` smooths the
    targets (never a mimicking target). Logs ``ce/<head>``."""

    def __init__(self, heads: str | Sequence[str] = "all", label_smoothing: float = 0.0, weight: float = 1.0) -> None:
        super().__init__()
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.heads = heads if isinstance(heads, str) else tuple(heads)
        self.label_smoothing, self.weight = label_smoothing, weight

    def chosen(self, names: Sequence[str]) -> list[int]:
        if self.heads == "all":
            return list(range(len(names)))
        if self.heads == "main":
            return [0]
        unknown = [h for h in self.heads if h not in names]
        if unknown:
            raise ValueError(f"cross-entropy on heads {unknown}: the model's heads are {list(names)}")
        return [names.index(h) for h in self.heads]

    def forward(self, heads, names, target, out, extra=None):
        total = None
        for k in self.chosen(names):  # H cross-entropies, H <= a handful: not the pairs
            ce = F.cross_entropy(fp32(heads[k]), target, label_smoothing=self.label_smoothing)
            out[f"ce/{names[k]}"] = ce
            total = ce if total is None else total + ce
        return total if self.weight == 1.0 or total is None else self.weight * total


@TERMS.register("pair_kl")
class PairKL(Term):
    """``alpha * T^2 * sum_jk W[j, k] KL(p_j || p_k)`` over the pair graph ``W`` (default: every ordered pair).

    Args:
        graph: a pair graph (:func:`dhm.losses.kl.graph_weights`): a name (``all``, ``main-teaches``), a mapping
            ``{"main->head1": 1.0}``, an (H, H) matrix or a callable of the head names.
        alpha: the term's weight (a ramp-up multiplies it).
        temperature: T; ``t2`` scales the term by T^2 (on by default, as DHM; off for DKS).
        detach: the teacher side of each pair gets no gradient.
        eps: probability smoothing before the log (released: 1e-8; 0 = exact log-softmax).
        dynamic: stochastic pair-gradient law (``released``, ``bernoulli(p)``); ``None`` = static.
        rampup_epochs, rampup: the weight's ramp-up (0 = off) and its shape (``linear``, ``sigmoid``).
        rampup_per: ``step`` (the weight follows the fractional epoch) or ``epoch`` (it is set once per epoch,
            from the epoch's index, as ONE's and OKDDip's authors).
        smoothing: how ``eps`` enters the KL (:func:`dhm.losses.kl.pair_kl`: ``renormalised``, ``teacher``,
            ``ratio``), as the method's authors wrote it.
        per_student: divide the pair sum by H - 1, so each student's terms are a mean over its teachers (DML).
    Logs ``kl`` (the weighted pair sum, before alpha and T^2), ``kl_weight`` (alpha times the ramp-up weight now),
    ``kl_weighted`` (what the term adds to the loss) and ``kl/<teacher>-><student>`` per counted pair. With a
    ramp-up, :meth:`set_progress` must be called before the first step (else the weight would silently stay 0).
    """

    def __init__(
        self,
        graph: Any = "all",
        alpha: float = 1.0,
        temperature: float = 1.0,
        t2: bool = True,
        detach: bool = True,
        eps: float = 1e-8,
        dynamic: str | PairLaw | None = None,
        rampup_epochs: float = 0.0,
        rampup: str = "linear",
        names: Sequence[str] | None = None,
        per_student: bool = False,
        rampup_per: str = "step",
        smoothing: str = "renormalised",
    ) -> None:
        super().__init__()
        if smoothing not in SMOOTHING:
            raise ValueError(f"KL smoothing is one of {', '.join(SMOOTHING)}, got {smoothing!r}")
        self.smoothing, self.rampup_per = smoothing, check_rampup_per(rampup_per)
        self.per_student = per_student  # DML: each student's pair terms averaged over its H - 1 teachers
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.graph, self.alpha, self.temperature, self.t2 = graph, alpha, temperature, t2
        self.detach, self.eps = detach, eps
        self.law = parse_pair_law(dynamic)
        self.rampup_epochs, self.rampup = rampup_epochs, rampup
        rampup_weight(rampup, 0.0, rampup_epochs)  # validates the name now, not mid-training
        # The ramped weight is a tensor, so changing it never triggers a torch.compile recompile.
        self.register_buffer("ramp", torch.tensor(rampup_weight(rampup, 0.0, rampup_epochs)), persistent=False)
        self.progressed = False  # set_progress was called: a ramped term refuses to run without it
        # With the head names known, the graph is resolved once: its weights a buffer (following .to()), the
        # counted pairs a host list. Without them, every call resolves it for the heads it is given.
        self.names = tuple(names) if names is not None else None
        weights = graph_weights(graph, self.names) if self.names is not None else torch.zeros(0)
        self.register_buffer("weights", weights, persistent=False)
        self.counted = _nonzero(weights)

    def set_progress(self, epoch: float) -> None:
        self.progressed = True
        if self.rampup_epochs > 0:  # otherwise the weight is the constant alpha: no kernel per step
            self.ramp.fill_(rampup_weight(self.rampup, ramp_epoch(epoch, self.rampup_per), self.rampup_epochs))

    def weight(self) -> float | Tensor:
        """``alpha`` times the ramp-up weight (a tensor while ramping)."""
        return self.alpha * self.ramp if self.rampup_epochs > 0 else self.alpha

    def pair_weights(self, names: Sequence[str], device: torch.device) -> tuple[Tensor, list[tuple[int, int]]]:
        """The graph's (H, H) weights on ``device`` and the (teacher, student) pairs with a nonzero weight."""
        if self.names is not None:
            if tuple(names) != self.names:
                raise ValueError(f"the pair term was built for heads {list(self.names)}, got {list(names)}")
            return self.weights, self.counted
        if self.graph == "all":  # every ordered pair: made on the device, no host copy
            count = len(names)
            return 1.0 - torch.eye(count, device=device), [(j, k) for j in range(count) for k in range(count) if j != k]
        weights = graph_weights(self.graph, names)
        return weights.to(device, non_blocking=True), _nonzero(weights)

    def forward(self, heads, names, target, out, extra=None):
        num_heads = len(heads)
        if num_heads < 2:
            return None
        if self.rampup_epochs > 0 and not self.progressed:
            raise RuntimeError(
                f"this loss ramps mimicking up over {self.rampup_epochs:g} epochs, but nothing says where training "
                "is, so its weight would stay 0 (deep supervision, not DHM): call loss.set_progress(epoch) with the "
                "fractional epoch before every step, or pass it to the call: loss(outputs, labels, progress=epoch)"
            )
        stopped = self.law(num_heads * (num_heads - 1), heads[0].device) if self.law is not None else None
        return self.contribution(heads, names, out, stopped)

    def contribution(self, heads, names, out, stopped: Tensor | None = None) -> Tensor:
        """The term for a given stopped-pair mask (bool (H(H-1),), row-major (teacher, student) pairs)."""
        num_heads = len(heads)
        kl = pair_kl(torch.stack(list(heads)), self.temperature, self.eps, self.detach, self.smoothing)
        weights, counted = self.pair_weights(names, kl.device)
        if stopped is not None:
            halt = pair_matrix(stopped.to(device=kl.device, dtype=torch.bool), num_heads)
            kl = torch.where(halt, kl.detach(), kl)
        pairs = (kl * weights).sum()
        if self.per_student:
            pairs = pairs / (num_heads - 1)
        scale = self.temperature**2 if self.t2 else 1.0
        weight = self.weight()
        out["kl"] = pairs.detach()
        out["kl_weight"] = weight.detach() if isinstance(weight, Tensor) else pairs.new_full((), float(weight))
        out["kl_weighted"] = out["kl_weight"] * scale * out["kl"]
        logged = kl.detach()
        for j, k in counted:  # logging views of the one matrix computed above
            out[f"kl/{names[j]}->{names[k]}"] = logged[j, k]
        return weight * scale * pairs


def _nonzero(weights: Tensor) -> list[tuple[int, int]]:
    """The (row, column) places of a host matrix's nonzero entries, row-major."""
    return [(j, k) for j in range(weights.shape[0]) for k in range(weights.shape[-1]) if weights[j, k] != 0]
