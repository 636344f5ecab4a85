"""An objective: the sum of a method's loss terms over a model's named head outputs, in float32 (autocast off),
returning the total as ``"loss"`` and every term's logged components."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .terms import Term


def head_names(logits: Sequence[Tensor] | Tensor, given: Sequence[str] | None) -> list[str] | None:
    """The names of the heads in ``logits``: its own (a branched model's output is a named tuple, fields ``main,
    head1, ...``), checked against ``given`` when both exist; a count or name mismatch is an error, never a head
    silently dropped."""
    count = 1 if isinstance(logits, Tensor) else len(logits)
    own = getattr(logits, "_fields", None)
    if given is not None and len(given) != count:
        raise ValueError(f"the loss was given {len(given)} head names {list(given)} for an output of {count} heads")
    if own is not None and given is not None and tuple(given) != tuple(own):
        raise ValueError(f"the loss was given head names {list(given)}, but the model's output names {list(own)}")
    return list(own) if own is not None else (list(given) if given is not None else None)


def default_names(count: int) -> list[str]:
    """``main, head1, head2, ...``."""
    return ["main"] + [f"head{k}" for k in range(1, count)]


class Objective(nn.Module):
    """The sum of ``terms`` (:mod:`dhm.losses.terms`).

    Example:
        >>> loss_fn = Objective([CrossEntropy("main"), PairKL({"main->head1": 1.0})], head_names=model.head_names)
        >>> out = loss_fn(model(images), labels)          # out["loss"].backward(); log the rest
    """

    def __init__(self, terms: Sequence[Term], head_names: Sequence[str] | None = None) -> None:
        super().__init__()
        self.terms = nn.ModuleList(terms)
        self.head_names = tuple(head_names) if head_names is not None else None
        # The terms' own parameters and their optimizers (plain data, not modules: the parameters are the terms').
        self.own_optimizers: list[torch.optim.Optimizer] = [
            opt for opt in (term.own_optimizer() for term in self.terms) if opt is not None
        ]

    def set_progress(self, epoch: float) -> None:
        """Tell every term where training is (fractional epoch), e.g. for a ramped-up weight."""
        for term in self.terms:
            term.set_progress(epoch)

    @property
    def needs(self) -> tuple[str, ...]:
        """The model outputs beyond logits that some term reads (``("features",)`` or none)."""
        return tuple(sorted({need for term in self.terms for need in term.needs}))

    def forward(
        self,
        outputs: Sequence[Tensor] | Tensor,
        target: Tensor,
        meta: Mapping[str, Tensor] | None = None,
        progress: float | None = None,
    ) -> dict[str, Tensor]:
        """The loss of ``outputs`` (logits per head, or ``HeadOutputs(logits, features)``) against ``target``;
        ``meta`` is the batch's per-sample metadata, for terms that read it; ``progress`` (the fractional epoch)
        is passed to :meth:`set_progress` first, for terms whose weight ramps up."""
        if progress is not None:
            self.set_progress(float(progress))
        extra: dict[str, Any] = {"meta": dict(meta or {})}
        logits = getattr(outputs, "logits", None)
        if logits is not None and hasattr(outputs, "features"):
            extra["features"] = outputs.features
            extra.update(getattr(outputs, "extras", None) or {})  # a layout's named outputs (OKDDip's attention)
            outputs = logits
        missing = [need for need in self.needs if need not in extra]
        if missing:
            raise ValueError(
                f"the loss reads the model's {', '.join(missing)}; build the model with features=True "
                f"(dhm.attach_branches(..., features=True))"
            )
        names = head_names(outputs, self.head_names)
        heads = [outputs] if isinstance(outputs, Tensor) else list(outputs)
        names = list(names) if names is not None else default_names(len(heads))
        # Autocast would run the pair contraction (einsum -> bmm) in bf16/fp16: the whole loss stays in float32.
        with torch.autocast(heads[0].device.type, enabled=False):
            out: dict[str, Tensor] = {}
            total = None
            for term in self.terms:
                part = term(heads, names, target, out, extra)
                if part is not None:
                    total = part if total is None else total + part
            out["loss"] = total
        return out
