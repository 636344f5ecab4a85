"""DML's alternating update (Zhang et al. 2018, Algorithm 1), the step ``alternating`` (``loss.mode=dml
loss.options.peer_update=alternating``): the peers of a
``model.branches=peers:K`` model take their optimizer steps one after another, each against the predictions of the
peers as they are after the updates already made in this step.

The joint update (the default) sums every peer's loss and moves all peers in one optimizer step from one forward
pass. The alternating step runs one forward of every peer, then for k = 0, 1, ..., K-1: peer k's loss (its
cross-entropy and its mimicking terms; every other head is a detached target), its backward and an optimizer step
that moves peer k alone (the other peers have no gradient, so SGD leaves them, their momentum and their weight
decay untouched). Before peer k's turn, the peer updated just before it is run again on the same batch, without
gradient, so that peer k learns from its updated predictions; that re-run leaves its BatchNorm statistics as they
were (every peer's statistics see the batch once per step, as in the joint update). Peer k's own prediction comes
from the step's first forward: its weights have not moved yet. The loss components and counters reported are those
of the first forward, as in the joint step.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..branches import DHMModel, unwrap
from ..errors import ConfigError
from ..precision import autocast
from .base import STEPS, EagerStep, Meta, StepOutput


def peer_networks(model: nn.Module) -> list[nn.Module] | None:
    """The K peers of a model of peers (``model.branches=peers:K``), the main network first (each maps images to
    logits), or None when ``model`` is not a model of peers only."""
    inner = unwrap(model)
    if not isinstance(inner, DHMModel) or not inner.specs or inner.extras:
        return None
    if any(fork != -1 for fork in inner.fork_stages) or inner.dynamic_fork or inner.features:
        return None
    return [inner.backbone, *inner.branches.values()]


@STEPS.register("alternating")
class AlternatingStep(EagerStep):
    """One step of DML's alternating update (module docstring): K backward passes and K optimizer steps, one per
    peer, from one forward of every peer plus K - 1 re-runs of an updated peer without gradient."""

    eager_only = True  # the peers run one by one

    @classmethod
    def check(cls, model: nn.Module, **run) -> None:
        if peer_networks(model) is None:
            raise ConfigError(
                "the alternating step moves whole networks one after another: it needs a model of peers "
                "(model.branches=peers:K)"
            )
        if run["distributed"] or run["accum"] != 1 or run["cuda_graph"]:
            raise ConfigError(
                "the alternating step runs in one process with train.accum_steps=1 and no train.cuda_graph"
            )

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        peers = peer_networks(self.model)
        if peers is None:
            raise ConfigError("the alternating step needs a model of peers (model.branches=peers:K)")
        self.peers = peers
        self.output_type = unwrap(self.model).output_type

    def __call__(self, x: Tensor, y: Tensor, last_micro: bool = True, meta: Meta | None = None) -> StepOutput:
        meta = meta or {}
        with autocast(self.device, self.amp):
            logits = [peer(x) for peer in self.peers]
        counts = self.counters(self.output_type(*logits), y) if self.counters is not None else None
        values = None
        for k in range(len(self.peers)):
            if k > 0:
                logits[k - 1] = self._rerun(self.peers[k - 1], x)
            view = self.output_type(*[z if i == k else z.detach() for i, z in enumerate(logits)])
            with autocast(self.device, self.amp):
                losses = self.loss_fn(view, y, meta)
            if values is None:
                self.keys = list(losses)
                values = torch.stack([v.detach().float() for v in losses.values()])
            self.scaler.scale(losses["loss"]).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.optimizer.zero_grad(set_to_none=True)
        return values, counts if counts is not None else values.new_zeros(0)

    def _rerun(self, peer: nn.Module, x: Tensor) -> Tensor:
        """``peer``'s logits on ``x`` in train mode, without gradient, its buffers (BatchNorm statistics) kept."""
        saved = [buffer.clone() for buffer in peer.buffers()]
        with torch.no_grad(), autocast(self.device, self.amp):
            logits = peer(x)
        with torch.no_grad():
            for buffer, value in zip(peer.buffers(), saved):
                buffer.copy_(value)
        return logits
