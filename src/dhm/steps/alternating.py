"""DML's alternating updates (Zhang et al. 2018): the peers of a ``model.branches=peers:K`` model take their
optimizer steps one after another, each against the predictions of the other peers as they are after the updates
already made in this step. Two steps, chosen by ``loss.options.peer_update``:

* ``alternating`` (the default, the authors' code: YingZhangDUT/Deep-Mutual-Learning train_models.py, one
  ``sess.run`` per peer, each dequeuing a batch of its own): the step's batch is cut into K equal chunks and peer k
  steps on chunk k, the other peers run on that chunk without gradient (their teachers' predictions). So
  ``data.batch_size`` is K times each peer's mini-batch, and over an epoch every peer steps on 1/K of the images,
  as the authors' peers share one stream of batches.
* ``alternating-one-batch`` (the paper's Algorithm 1): every peer steps on the whole batch. One forward of every
  peer, then for k = 0, 1, ..., K-1 peer k's loss, backward and optimizer step; before peer k's turn the peer updated
  just before it is run again on the batch, without gradient, so that peer k learns from its updated predictions.
  Peer k's own prediction comes from the first forward: its weights have not moved yet.

In both, peer k's loss is its cross-entropy and its mimicking terms (every other head a detached target); its
optimizer step moves peer k alone (the others have no gradient, so SGD leaves them, their momentum and their weight
decay untouched); a peer run without gradient keeps its BatchNorm statistics (every peer's statistics see each
image once per step, as in the joint update). The joint update (``peer_update=joint``) sums every peer's loss and
moves all peers in one optimizer step. The loss components reported are the mean over the K turns (``alternating``)
or those of the first forward (``alternating-one-batch``).
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


@STEPS.register("alternating-one-batch")
class AlternatingStep(EagerStep):
    """One step of DML's alternating update on one batch (module docstring): K backward passes and K optimizer
    steps, one per peer, from one forward of every peer plus K - 1 re-runs of an updated peer without gradient."""

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
                "the alternating step runs in one process with train.accum_steps=1 and no train.cuda_graph "
                "(loss.options.peer_update=joint moves every peer in one step, under DDP too)"
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
            losses = self._turn(k, logits, y, meta)
            if values is None:
                values = torch.stack([v.detach().float() for v in losses.values()])
        return values, counts if counts is not None else values.new_zeros(0)

    def _turn(self, k: int, logits: list[Tensor], y: Tensor, meta: Meta) -> dict[str, Tensor]:
        """Peer k's loss against the other heads (detached), its backward and its optimizer step."""
        view = self.output_type(*[z if i == k else z.detach() for i, z in enumerate(logits)])
        with autocast(self.device, self.amp):
            losses = self.loss_fn(view, y, meta)
        self.keys = list(losses)
        self.scaler.scale(losses["loss"]).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        return losses

    def _rerun(self, peer: nn.Module, x: Tensor) -> Tensor:
        """``peer``'s logits on ``x`` in train mode, without gradient, its buffers (BatchNorm statistics) kept."""
        saved = [buffer.clone() for buffer in peer.buffers()]
        with torch.no_grad(), autocast(self.device, self.amp):
            logits = peer(x)
        with torch.no_grad():
            for buffer, value in zip(peer.buffers(), saved):
                buffer.copy_(value)
        return logits


@STEPS.register("alternating")
class FreshBatchStep(AlternatingStep):
    """One step of DML's alternating update as its authors' code: the batch cut into K chunks, peer k steps on
    chunk k against the other peers' predictions on it (module docstring)."""

    @classmethod
    def check(cls, model: nn.Module, **run) -> None:
        super().check(model, **run)
        peers, batch = len(peer_networks(model) or ()), run.get("batch_size")
        if batch is not None and batch % peers:
            raise ConfigError(
                f"loss.options.peer_update=alternating gives each of the {peers} peers a mini-batch of its own: "
                f"data.batch_size ({batch}) must be a multiple of {peers}"
            )

    def __call__(self, x: Tensor, y: Tensor, last_micro: bool = True, meta: Meta | None = None) -> StepOutput:
        meta = meta or {}
        count = len(self.peers)
        xs, ys = x.chunk(count), y.chunk(count)
        metas = [{key: value.chunk(count)[k] for key, value in meta.items()} for k in range(count)]
        total, counts = None, None
        for k, peer in enumerate(self.peers):
            with autocast(self.device, self.amp):
                own = peer(xs[k])
            logits = [own if i == k else self._rerun(other, xs[k]) for i, other in enumerate(self.peers)]
            if self.counters is not None:
                seen = self.counters(self.output_type(*[z.detach() for z in logits]), ys[k])
                counts = seen if counts is None else counts + seen
            losses = self._turn(k, logits, ys[k], metas[k])
            values = torch.stack([v.detach().float() for v in losses.values()])
            total = values if total is None else total + values
        return total / count, counts if counts is not None else total.new_zeros(0)
