"""The DHM objective for API users: cross-entropy on the heads plus pairwise mimicking over every ordered head pair
(docs/method.md section 3), as a function (:func:`mimic_loss`) and a module (:class:`MimicLoss`), both built
from the registered terms ``ce`` and ``pair_kl``.

All H(H-1) ordered pairs are computed in one batched contraction; pair gradients are switched by tensor masks
(``torch.where`` between a term and its detached copy), so values are always logged, shapes never change and
torch.compile never recompiles.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ..dynamic import PairLaw
from .kl import pair_kl
from .objective import Objective, default_names, head_names
from .terms import CrossEntropy, PairKL

__all__ = ["MODES", "MimicLoss", "head_names", "mimic_loss", "pair_kl"]

# mode -> (cross-entropy on every head, pairwise mimicking)
MODES: dict[str, tuple[bool, bool]] = {"ce": (False, False), "dsl": (True, False), "dhm": (True, True)}


def _check_mode(mode: str) -> tuple[bool, bool]:
    if mode not in MODES:
        raise ValueError(f"unknown loss mode {mode!r}; expected one of {', '.join(MODES)}")
    return MODES[mode]


def mimic_loss(
    logits: Sequence[Tensor] | Tensor,
    target: Tensor,
    *,
    mode: str = "dhm",
    alpha: float | Tensor = 1.0,
    temperature: float = 1.0,
    eps: float = 1e-8,
    stopped: Tensor | None = None,
    names: Sequence[str] | None = None,
    label_smoothing: float = 0.0,
) -> dict[str, Tensor]:
    """The loss of ``mode`` (``ce``, ``dsl``, ``dhm``) and its components.

    Args:
        logits: head logits, main first (a single tensor is one head).
        target: class indices (B,).
        alpha: weight of the mimicking sum (a tensor for a ramped weight).
        stopped: optional bool (H(H-1),) mask, pairs in row-major (teacher, student) order, of pair terms whose
            gradient is stopped this step (values still count).
        names: head names for the dict keys; default ``main, head1, ...``.
        label_smoothing: smoothing of the cross-entropy targets (the mimicking targets are never smoothed).

    Returns:
        ``{"loss": total, "ce/<head>": ..., "kl/<teacher>-><student>": ..., "kl": sum of pair terms}``.

    Example:
        >>> out = mimic_loss([z0, z1, z2], y)          # out["loss"].backward()
    """
    ce_all, mimic = _check_mode(mode)
    names = head_names(logits, names)
    heads = [logits] if isinstance(logits, Tensor) else list(logits)
    names = list(names) if names is not None else default_names(len(heads))
    with torch.autocast(heads[0].device.type, enabled=False):
        out: dict[str, Tensor] = {}
        total = CrossEntropy("all" if ce_all else "main", label_smoothing)(heads, names, target, out)
        if mimic and len(heads) > 1:
            term = PairKL("all", alpha=1.0, temperature=temperature, eps=eps)
            term.alpha = alpha  # a float or a (ramped) tensor
            total = total + term.contribution(heads, names, out, stopped)
        out["loss"] = total
    return out


class MimicLoss(Objective):
    """Parameter-free DHM loss module: the terms ``ce`` (every head, or the main one for ``ce``) and ``pair_kl``
    over every ordered head pair (``dhm``).

    Args:
        mode: ``ce`` (main head only), ``dsl`` (CE on every head) or ``dhm`` (CE + pairwise mimicking).
        alpha: weight of every pair term (released: 1).
        temperature: T; the mimicking sum is scaled by T^2 (released: 1).
        eps: probability smoothing before the log (released: 1e-8; 0 = exact).
        dynamic: stochastic pair-gradient law, e.g. ``"released"`` or ``"bernoulli(0.5)"``; ``None`` = static.
        rampup_epochs: length of the mimicking ramp-up (0 = off, as released). With a ramp-up the loss must know
            where training is: call ``loss.set_progress(epoch)`` (fractional epoch) before every step, or pass
            ``progress=epoch`` to the call; without either the first call raises, rather than train with the
            mimicking weight stuck at 0.
        rampup: ramp-up shape, ``linear`` or ``sigmoid``.
        head_names: names used in the returned dict.
        label_smoothing: smoothing of the cross-entropy targets only; mimicking targets stay the heads' own
            predictions.

    Returns ``{"loss", "ce/<head>", "kl" (the unweighted pair sum), "kl_weight" (alpha times the ramp-up weight
    now), "kl_weighted" (what mimicking adds to the loss), "kl/<teacher>-><student>"}``.

    Example:
        >>> loss_fn = dhm.MimicLoss(mode="dhm")
        >>> out = loss_fn(model(images), labels)      # out["loss"].backward(); log the rest
        >>> ramped = dhm.MimicLoss(mode="dhm", rampup_epochs=5)
        >>> out = ramped(model(images), labels, progress=epoch + step / steps_per_epoch)
    """

    def __init__(
        self,
        mode: str = "dhm",
        alpha: float = 1.0,
        temperature: float = 1.0,
        eps: float = 1e-8,
        dynamic: str | PairLaw | None = None,
        rampup_epochs: float = 0.0,
        rampup: str = "linear",
        head_names: Sequence[str] | None = None,
        label_smoothing: float = 0.0,
    ) -> None:
        ce_all, mimic = _check_mode(mode)
        terms = [CrossEntropy("all" if ce_all else "main", label_smoothing)]
        if mimic:
            terms.append(
                PairKL("all", alpha, temperature, eps=eps, dynamic=dynamic, rampup_epochs=rampup_epochs, rampup=rampup)
            )
        elif temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        super().__init__(terms, head_names)
        self.mode, self.alpha, self.temperature, self.eps = mode, alpha, temperature, eps
        self.label_smoothing, self.rampup_epochs, self.rampup = label_smoothing, rampup_epochs, rampup
