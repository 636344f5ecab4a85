"""What a trained branched model deploys (``model.deploy``): the main path, the plain backbone with every branch
dropped (the default, at no cost), or ONE's gated ensemble: the trunk, every branch and the gate as one network
whose output is the gate's mixture of the heads' logits (Lan et al. 2018 report it beside the single branch; it
costs the branches' compute at inference)."""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from ..registry import Registry
from .model import DHMModel, strip, unwrap


class GatedEnsemble(nn.Module):
    """ONE's gated ensemble as a deployable network: ``forward`` returns the ``gate`` head's logits (the gate's
    weighted sum of every head's logits), in train and eval mode alike. Its weights are the branched model's, under
    the prefix ``net.``."""

    def __init__(self, model: DHMModel) -> None:
        super().__init__()
        if not isinstance(model, DHMModel) or model.gate is None:
            raise ValueError("a gated ensemble needs ONE's gate over the heads: model.branches=one:m (loss.mode=one)")
        self.net = model

    def forward(self, x: Tensor) -> Tensor:
        return self.net.forward_heads(x)[-1]  # the gate's output comes after every head's


DEPLOYS: Registry[Callable[[nn.Module], nn.Module]] = Registry("deployed head")
DEPLOYS.register("main")(strip)
DEPLOYS.register("gate")(lambda model: GatedEnsemble(unwrap(model)))


def deployable(model: nn.Module, head: str = "main") -> nn.Module:
    """The network a run deploys: ``main``, the plain backbone (the very module); ``gate``, ONE's gated ensemble
    (:class:`GatedEnsemble` over the very branched model).

    Example:
        >>> plain = dhm.deployable(model)                 # the same as dhm.strip(model)
        >>> ensemble = dhm.deployable(model, "gate")      # ONE: trunk + branches + gate, one output
    """
    return DEPLOYS.get(head)(model)


def deployed_weights(weights: dict[str, Tensor], head: str) -> dict[str, Tensor]:
    """The deployed network's state dict from a training checkpoint's (the branched model's) weights."""
    if head == "main":
        prefix = "backbone."
        return {k[len(prefix) :]: v for k, v in weights.items() if k.startswith(prefix)} or weights
    return {f"net.{k}": v for k, v in weights.items()}
