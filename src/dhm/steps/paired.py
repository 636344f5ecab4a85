"""CS-KD's step as its authors run it, the step ``pairs`` (``loss.mode=cskd``, its option
``loss.options.partner_forward=separate`` by default): the batch
holds (anchor, partner) pairs, interleaved (``data.sampler=class_pairs``); the anchors go through the model in a
forward with gradient and the partners in a separate forward without gradient, so each forward's BatchNorm sees
its own half of the batch and no gradient reaches the partners' activations. The loss sees the two outputs
interleaved again, as from one forward (``partner_forward=shared`` runs that one forward: the partners then
share the anchors' BatchNorm statistics, and gradient flows through them).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..errors import ConfigError
from .base import STEPS, EagerStep


@STEPS.register("pairs")
class PairedStep(EagerStep):
    """The eager step (accumulation, DDP, loss scaling) with the model run as two forwards: anchors (even places)
    with gradient, partners (odd places) without."""

    @classmethod
    def check(cls, model, **run) -> None:
        if run.get("sampler") != "class_pairs":
            raise ConfigError(
                "the pairs step runs the partners of (anchor, partner) pairs apart: it needs data.sampler=class_pairs"
            )
        if run["cuda_graph"]:
            raise ConfigError("the pairs step is not captured in a CUDA graph: set train.cuda_graph=false")

    def run_model(self, x: Tensor) -> Tensor:
        anchors = self.model(x[0::2])
        with torch.no_grad():
            partners = self.model(x[1::2])
        if not isinstance(anchors, Tensor):
            raise ConfigError("the pairs step needs a model with one output (no branches)")
        return torch.stack([anchors, partners], 1).flatten(0, 1)  # anchor, partner, anchor, ... as in the batch
