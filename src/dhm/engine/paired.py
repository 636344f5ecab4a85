"""CS-KD's step as its authors run it (``loss.partner_forward=separate``, which ``loss.mode=cskd`` sets): the batch
holds (anchor, partner) pairs, interleaved (``data.sampler=class_pairs``); the anchors go through the model in a
forward with gradient and the partners in a separate forward without gradient, so each forward's BatchNorm sees
its own half of the batch and no gradient reaches the partners' activations. The loss sees the two outputs
interleaved again, as from one forward (``loss.partner_forward=shared`` runs that one forward: the partners then
share the anchors' BatchNorm statistics, and gradient flows through them).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..errors import ConfigError
from .step import STEPS, EagerStep

FORWARDS = ("shared", "separate")


def check_pairs(partner_forward: str, sampler: str, cuda_graph: bool) -> None:
    """ConfigError unless ``loss.partner_forward`` is known and, when separate, the batches are pairs and the step
    is not captured in a CUDA graph."""
    if partner_forward not in FORWARDS:
        raise ConfigError(f"loss.partner_forward is one of {', '.join(FORWARDS)}, got {partner_forward!r}")
    if partner_forward == "separate" and sampler != "class_pairs":
        raise ConfigError(
            "loss.partner_forward=separate runs the partners of (anchor, partner) pairs apart: it needs "
            "data.sampler=class_pairs (as loss.mode=cskd sets)"
        )
    if partner_forward == "separate" and cuda_graph:
        raise ConfigError("loss.partner_forward=separate is not captured in a CUDA graph: set train.cuda_graph=false")


@STEPS.register("pairs")
class PairedStep(EagerStep):
    """The eager step (accumulation, DDP, loss scaling) with the model run as two forwards: anchors (even places)
    with gradient, partners (odd places) without."""

    def run_model(self, x: Tensor) -> Tensor:
        anchors = self.model(x[0::2])
        with torch.no_grad():
            partners = self.model(x[1::2])
        if not isinstance(anchors, Tensor):
            raise ConfigError("loss.partner_forward=separate needs a model with one output (CS-KD trains no branches)")
        return torch.stack([anchors, partners], 1).flatten(0, 1)  # anchor, partner, anchor, ... as in the batch
