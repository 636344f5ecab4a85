"""The "dynamic" parts of DHM that live in the loss (docs/method.md section 4): laws that stop the gradient of a random
set of pair terms each step, and ramp-ups of the mimicking weight. Randomness comes from torch's RNG."""

from __future__ import annotations

import math
import re
from collections.abc import Callable

import torch
from torch import Tensor

from .registry import Registry

PairLaw = Callable[[int, torch.device], Tensor]
"""``law(num_pairs, device)`` -> bool tensor (num_pairs,), True where the pair term's gradient is stopped."""

PAIR_LAWS: Registry[Callable[..., PairLaw]] = Registry("pair-gradient law")


@PAIR_LAWS.register("released")
def released() -> PairLaw:
    """The law of the authors' released code (switched off there): k = floor(U * P), k pair indices drawn
    uniformly with replacement, the distinct ones stopped. Each term is stopped with probability ((P-1)/P)^P; at
    least one keeps its gradient. ``official`` is its older name."""

    def draw(num_pairs: int, device: torch.device) -> Tensor:
        k = torch.floor(torch.rand((), device=device) * num_pairs)
        picks = torch.randint(0, num_pairs, (num_pairs,), device=device)
        taken = torch.arange(num_pairs, device=device) < k  # only the first k of the P draws count
        # One-hot + any instead of index_add_: deterministic on every device.
        return (torch.nn.functional.one_hot(picks, num_pairs).bool() & taken[:, None]).any(0)

    return draw


PAIR_LAWS.register("official")(released)  # the older name, kept so that existing configs keep working


@PAIR_LAWS.register("bernoulli")
def bernoulli(p: float = 0.5) -> PairLaw:
    """Each pair term stopped independently with probability ``p`` (all may be stopped, with probability p^P)."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"bernoulli law needs 0 <= p <= 1, got {p}")

    def draw(num_pairs: int, device: torch.device) -> Tensor:
        return torch.rand(num_pairs, device=device) < p

    return draw


def parse_pair_law(spec: str | PairLaw | None) -> PairLaw | None:
    """``None``, a callable law, or a registered law name with optional arguments: ``"released"``,
    ``"bernoulli(0.3)"``.

    Example:
        >>> law = parse_pair_law("bernoulli(0.25)")
        >>> law(6, torch.device("cpu")).shape
        torch.Size([6])
    """
    if spec is None or callable(spec):
        return spec
    match = re.fullmatch(r"\s*([a-z_]+)\s*(?:\((.*)\))?\s*", spec)
    if not match:
        raise ValueError(f"cannot parse pair-gradient law {spec!r}; expected e.g. 'released' or 'bernoulli(0.5)'")
    name, args = match.groups()
    values = [float(a) for a in args.split(",")] if args and args.strip() else []
    return PAIR_LAWS.get(name)(*values)


RAMPUPS: Registry[Callable[[float], float]] = Registry("ramp-up")


@RAMPUPS.register("linear")
def linear(t: float) -> float:
    """w(t) = t."""
    return t


@RAMPUPS.register("sigmoid")
def sigmoid(t: float) -> float:
    """w(t) = exp(-5 (1 - t)^2), the mean-teacher ramp-up."""
    return math.exp(-5.0 * (1.0 - t) ** 2)


RAMPUP_PER = ("step", "epoch")


def check_rampup_per(value: str) -> str:
    """``value`` if it is a way to evaluate a ramp-up (``step`` or ``epoch``), else a ValueError."""
    if value not in RAMPUP_PER:
        raise ValueError(f"a ramp-up is evaluated per step or per epoch (loss.rampup_per), got {value!r}")
    return value


def ramp_epoch(epoch: float, per: str) -> float:
    """Where a ramp-up is read: the fractional ``epoch`` (``per="step"``) or its index (``per="epoch"``: the
    weight is set once at the start of each epoch, as ONE's and OKDDip's authors)."""
    return float(math.floor(epoch + 1e-9)) if per == "epoch" else epoch


def rampup_weight(kind: str, epoch: float, period: float) -> float:
    """Weight of the mimicking term at ``epoch`` (fractional) for a ramp-up of ``period`` epochs (0 = none)."""
    if period <= 0 or epoch >= period:
        return 1.0
    return RAMPUPS.get(kind)(max(epoch, 0.0) / period)
