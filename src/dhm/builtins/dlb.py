"""DLB (Shen et al., "Self-Distillation from the Last Mini-Batch for Consistency Regularization", CVPR 2022) as one
plugin file: a method, its loss term, its sampler and its step, each registered under dhm's registries. Built in
(``loss.mode=dlb``), and the file a plugin can be: it imports dhm only by absolute names, and a copy of it with
another ``NAME`` loads through ``DHM_PLUGINS`` (tests/test_plugins.py does exactly that).

As the authors train it (Meta-knowledge-Lab/DLB@5de954b, dlb.py, ``train_one_epoch``): at every step after the
first, the step's n new images and the previous step's n images (a fresh augmentation of them) each go through the
model, in that order, in forwards of their own; the loss is the cross-entropy over all 2n images plus
``alpha * T^2 * KL(softmax(z_prev / T) || softmax(z_rep / T))`` (batch mean), where ``z_prev`` are the logits the
previous step computed for those images (detached) and ``z_rep`` today's; the very first step of a run trains the
new images with cross-entropy alone. The previous batch carries across epochs (the last step of an epoch teaches
the first of the next). Defaults: T = 3, alpha = 1 (the paper).

In dhm the global batch (``data.batch_size`` = 2n) holds the pairs (new image, the previous step's image at the
same place), interleaved, so that a pair stays on one process under DDP and each process keeps its own previous
logits; the term keeps them in a persistent buffer (checkpointed: a resume is exact).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from dhm.data.samplers import SAMPLERS, Sampler
from dhm.errors import ConfigError, DataError
from dhm.losses.terms import TERMS, Term
from dhm.methods import METHODS, Method, TermSpec
from dhm.steps import STEPS, EagerStep

NAME = "dlb"  # the method's name; its term, sampler and step are named after it


@SAMPLERS.register(f"{NAME}-pairs")
class LastBatchPairs(Sampler):
    """Per step n = batch/2 new images (a seeded permutation, the last partial batch dropped), each followed by the
    image at its place in the previous step (the previous epoch's last step for the first step of an epoch)."""

    group = 2
    continues = True  # the plan passes the previous epoch's seed as well

    def __init__(self, labels: Tensor, **_: object) -> None:
        self.size = len(labels)

    def steps(self, batch_size: int) -> int:
        if batch_size % 2:
            raise DataError(f"data.batch_size={batch_size} must be even: new images and last step's images")
        return self.size // (batch_size // 2)

    def _new(self, steps: int, half: int, seed: int) -> Tensor:
        order = torch.randperm(self.size, generator=torch.Generator().manual_seed(seed))
        return order[: steps * half].view(steps, half)

    def draw(self, steps, batch_size, generator, seed, previous_seed=None):
        half = batch_size // 2
        new = self._new(steps, half, seed)
        before = self._new(steps, half, previous_seed)[-1] if previous_seed is not None else new[0]
        last = torch.cat([before[None], new[:-1]])
        return torch.stack([new, last], -1).flatten().to(generator.device)


@TERMS.register(NAME)
class LastBatchKD(Term):
    """DLB's loss on the main head of an interleaved (new, last-step) batch. Logs ``ce/main`` and ``dlb`` (the KL,
    before alpha T^2)."""

    def __init__(self, alpha: float = 1.0, temperature: float = 3.0, t2: bool = True) -> None:
        super().__init__()
        if temperature <= 0 or alpha < 0:
            raise ValueError(f"dlb needs temperature > 0 and alpha >= 0, got {temperature}, {alpha}")
        self.alpha, self.temperature, self.t2 = alpha, temperature, t2
        self.register_buffer("previous", torch.zeros(0))  # the last step's logits of its new images
        self.register_buffer("previous_index", torch.zeros(0, dtype=torch.long))  # and those images' indices
        self.register_buffer("primed", torch.tensor(False))
        self.ready = False  # a host copy of ``primed``: the step reads it without a device synchronisation

    def _load_from_state_dict(self, state, prefix, *args, **kwargs):
        for name in ("previous", "previous_index"):
            saved = state.get(prefix + name)
            if saved is not None:
                setattr(self, name, torch.empty_like(saved))
        super()._load_from_state_dict(state, prefix, *args, **kwargs)
        self.ready = bool(self.primed)

    def forward(self, heads, names, target, out, extra=None):
        z = heads[0].float() if heads[0].dtype != torch.float64 else heads[0]
        index = ((extra or {}).get("meta") or {}).get("index")
        if not self.ready:  # the first step of a run: the step ran the new images only
            ce = F.cross_entropy(z, target)
            self._remember(z, index)
            out["ce/main"], out["dlb"] = ce.detach(), ce.new_zeros(())  # the same components every step
            return ce
        new, last = z[0::2], z[1::2]
        ce = F.cross_entropy(torch.cat([last, new]), torch.cat([target[1::2], target[0::2]]))
        t = self.temperature
        teacher = F.softmax(self.previous.to(z.dtype) / t, -1)
        rows = F.kl_div(F.log_softmax(last / t, -1), teacher, reduction="none").sum(-1)
        if index is not None and self.previous_index.numel() == rows.numel():
            # a pair whose image is not the one remembered (an epoch cut short by train.limit_batches) adds no
            # KL; in a full epoch every pair matches and this is the authors' batch mean
            rows = rows * (index[1::2] == self.previous_index).to(rows.dtype)
        kl = rows.sum() / rows.numel()
        self._remember(new, index[0::2] if index is not None else None)
        out["ce/main"], out["dlb"] = ce.detach(), kl.detach()
        return ce + self.alpha * (t * t if self.t2 else 1.0) * kl

    @torch.no_grad()
    def _remember(self, new: Tensor, index: Tensor | None) -> None:
        self.previous = new.detach().clone()
        if index is not None:
            self.previous_index = index.detach().clone()
        self.primed.fill_(True)
        self.ready = True


@STEPS.register(f"{NAME}-halves")
class HalvesStep(EagerStep):
    """The new images, then the last step's images, each in a forward of its own with gradient (the authors'
    order); the loss sees the two outputs interleaved again. The first step of a run runs the new images only."""

    @classmethod
    def check(cls, model, **run) -> None:
        if run.get("sampler") != f"{NAME}-pairs" or run["accum"] != 1 or run["cuda_graph"]:
            raise ConfigError(
                f"the {NAME}-halves step needs data.sampler={NAME}-pairs, train.accum_steps=1 and no CUDA graph"
            )

    def _term(self) -> LastBatchKD:
        return next(t for t in self.loss_fn.terms if isinstance(t, LastBatchKD))

    def _forward_backward(self, x, y, meta, cache=True):
        if not self._term().ready:
            meta = {k: v[0::2] for k, v in meta.items()}
            return super()._forward_backward(x[0::2].contiguous(), y[0::2], meta, cache)
        return super()._forward_backward(x, y, meta, cache)

    def run_model(self, x: Tensor) -> Tensor:
        if not self._term().ready:
            return self.model(x)
        new = self.model(x[0::2])
        last = self.model(x[1::2])
        return torch.stack([new, last], 1).flatten(0, 1)


METHODS.register(NAME)(
    Method(
        lambda loss: [TermSpec(NAME, {"alpha": loss.alpha, "temperature": loss.temperature, "t2": loss.t2})],
        layout="none",
        supervise="none",
        sampler=f"{NAME}-pairs",
        reads=("alpha", "temperature", "t2"),
        step=lambda options: f"{NAME}-halves",
        defaults=lambda epochs: {"loss.temperature": 3.0, "loss.alpha": 1.0},
        doc="DLB (Shen et al. 2022): each step also re-runs last step's images, taught by last step's logits, T=3",
    )
)
