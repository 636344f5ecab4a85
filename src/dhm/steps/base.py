"""One training step as a callable: eager (any device, DDP, gradient accumulation, fp16 loss scaling), or the whole
step (forward, loss, backward, SGD update, meters) captured once in a CUDA graph and replayed (``train.cuda_graph``).

Small CIFAR models are launch-bound on a GPU: an eager or compiled step spends most of its time in Python and
kernel launches, not in the kernels. A replayed graph launches the step's hundreds of kernels with one call. What
changes per step lives in device tensors read by the graph: the batch (copied into static input buffers), the
learning rate (a tensor per parameter group, filled from the schedule before each replay), the mimicking ramp-up
weight (the loss's buffer) and the random numbers of the dynamic variants (CUDA's graph-safe generator).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ..precision import autocast
from ..registry import Registry

StepOutput = tuple[Tensor, Tensor]  # (loss components stacked in ``keys`` order, the task's step counters)
Meta = dict[str, Tensor]  # the batch's per-sample metadata (dhm.data.Batch.meta), for loss terms that read it
Counters = Callable[[object, Tensor], "Tensor | None"]  # (model output, labels) -> (K,) device counters


class EagerStep:
    """Forward, loss and backward of one micro-batch; the SGD update after the last micro-batch of a step.

    A step kind is registered in :data:`STEPS`; a method names the kind it trains with
    (:attr:`dhm.methods.Method.step`) and the engine runs it knowing no method. ``check`` refuses, before a run
    starts, a run the step cannot train; ``eager_only`` steps are never compiled."""

    eager_only = False

    @classmethod
    def check(cls, model: nn.Module, **run) -> None:
        """ConfigError unless this step can train ``model`` in a run of ``run``'s settings (``distributed``,
        ``accum``, ``cuda_graph``, ``amp``, ``device``, ``optimizer``, ``loss_fn``, ``sampler``)."""

    def __init__(
        self,
        model: nn.Module,
        loss_fn: nn.Module,
        optimizer: torch.optim.Optimizer,
        scaler: torch.amp.GradScaler,
        amp: str,
        device: torch.device,
        accum: int = 1,
        distributed: bool = False,
        counters: Counters | None = None,
    ) -> None:
        self.model, self.loss_fn, self.optimizer, self.scaler = model, loss_fn, optimizer, scaler
        self.amp, self.device, self.accum, self.distributed = amp, device, accum, distributed
        self.counters = counters  # what the task counts per micro-batch (None: nothing)
        self.keys: list[str] = []  # names of the loss components, in the order of the stacked values

    def __call__(self, x: Tensor, y: Tensor, last_micro: bool = True, meta: Meta | None = None) -> StepOutput:
        sync = self.model.no_sync() if self.distributed and not last_micro else contextlib.nullcontext()
        with sync:
            out = self._forward_backward(x, y, meta or {})
        if last_micro:
            self.scaler.step(self.optimizer)
            for own in getattr(self.loss_fn, "own_optimizers", ()):  # a loss term's own parameters (center loss)
                if self.distributed:  # the loss is not inside DDP: average its gradients here
                    for group in own.param_groups:
                        for p in group["params"]:
                            if p.grad is not None:
                                torch.distributed.all_reduce(p.grad)
                                p.grad.div_(torch.distributed.get_world_size())
                self.scaler.step(own)
                own.zero_grad(set_to_none=True)
            self.scaler.update()
            self.optimizer.zero_grad(set_to_none=True)
        return out

    def run_model(self, x: Tensor) -> object:
        """The model's train-mode output for the batch ``x`` (CS-KD's step runs its partners apart)."""
        return self.model(x)

    def _forward_backward(self, x: Tensor, y: Tensor, meta: Meta, cache: bool = True) -> StepOutput:
        with autocast(self.device, self.amp, cache):
            out = self.run_model(x)
            losses = self.loss_fn(out, y, meta)
        self.scaler.scale(losses["loss"] / self.accum).backward()
        self.keys = list(losses)
        values = torch.stack([v.detach().float() for v in losses.values()])
        counts = self.counters(out, y) if self.counters is not None else None
        return values, counts if counts is not None else values.new_zeros(0)


class GraphStep(EagerStep):
    """The whole step in one CUDA graph: a few eager steps on a side stream (cuDNN and cuBLAS set-up, momentum
    buffers, compilation), then one capture, then a replay per step. Needs CUDA, one process, no accumulation, no
    fp16 scaler and a fused SGD (its update reads the learning rate from a device tensor)."""

    warmup = 3

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.check_capture(self.device, self.distributed, self.accum, self.amp, self.optimizer)
        self.lrs = [torch.tensor(float(g["lr"]), device=self.device) for g in self.optimizer.param_groups]
        self.graph: torch.cuda.CUDAGraph | None = None
        self.calls = 0

    @classmethod
    def check(cls, model: nn.Module, **run) -> None:
        if getattr(run.get("loss_fn"), "own_optimizers", None):
            raise ConfigError(
                "train.cuda_graph=true captures the model's update only: not with a loss term's own "
                "optimizer (a center loss)"
            )
        cls.check_capture(run["device"], run["distributed"], run["accum"], run["amp"], run["optimizer"])

    @staticmethod
    def check_capture(
        device: torch.device, distributed: bool, accum: int, amp: str, optimizer: torch.optim.Optimizer
    ) -> None:
        """ConfigError unless the step can be captured (called before a run starts)."""
        if device.type != "cuda" or distributed or accum != 1 or amp == "fp16":
            raise ConfigError(
                "train.cuda_graph=true needs one CUDA process, train.accum_steps=1 and no fp16 (use train.amp=bf16)"
            )
        if not optimizer.defaults.get("fused"):
            raise ConfigError("train.cuda_graph=true needs the fused SGD (built on CUDA devices)")

    def __call__(self, x: Tensor, y: Tensor, last_micro: bool = True, meta: Meta | None = None) -> StepOutput:
        meta = meta or {}
        if self.graph is not None:
            self._fill_lrs()
            self.static_x.copy_(x)
            self.static_y.copy_(y)
            for key, value in self.static_meta.items():
                value.copy_(meta[key])
            self.graph.replay()
            return self.static_out
        if self.calls < self.warmup:
            self.calls += 1
            stream = torch.cuda.Stream(self.device)
            stream.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(stream):
                out = super().__call__(x, y, meta=meta)
            torch.cuda.current_stream(self.device).wait_stream(stream)
            return out
        return self._capture(x, y, meta)

    def _fill_lrs(self) -> None:
        for lr, group in zip(self.lrs, self.optimizer.param_groups):
            lr.fill_(float(group["lr"]))

    def _capture(self, x: Tensor, y: Tensor, meta: Meta) -> StepOutput:
        self.static_x, self.static_y = x.clone(), y.clone()
        self.static_meta = {key: value.clone() for key, value in meta.items()}
        self._fill_lrs()
        self.optimizer.zero_grad(set_to_none=True)  # backward in the graph allocates the gradients it overwrites
        groups = self.optimizer.param_groups
        floats = [g["lr"] for g in groups]
        for group, lr in zip(groups, self.lrs):
            group["lr"] = lr  # the captured update reads this tensor; the schedule keeps writing floats
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                out = self._forward_backward(self.static_x, self.static_y, self.static_meta, cache=False)
                self.optimizer.step()
        finally:
            for group, lr in zip(groups, floats):
                group["lr"] = lr
        self.graph, self.static_out = graph, out
        graph.replay()  # capturing records the step without running it
        return out


STEPS: Registry[type[EagerStep]] = Registry("training step")
STEPS.register("eager")(EagerStep)
STEPS.register("graph")(GraphStep)  # train.cuda_graph; "alternating" and "pairs" register in their own modules


def run_kind(method_step: str, cuda_graph: bool) -> str:
    """The registered step kind of a run: the method's own step, or for the ``joint`` step of most methods
    ``graph`` (``train.cuda_graph``) or ``eager``."""
    if method_step != "joint":
        return method_step
    return "graph" if cuda_graph else "eager"


def make_step(kind: str, *args, **kwargs) -> EagerStep:
    """The step object of a run: ``kind`` is a registered step (``eager``, ``graph``, ``alternating``, ``pairs``,
    or one a plugin registers); see :func:`run_kind`."""
    return STEPS.get(kind)(*args, **kwargs)
