"""Optimizers (SGD, as the paper trains; Adam and AdamW, as re-ID trains) and the learning-rate schedules (per step, as
a function of the fractional epoch)."""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable

import torch
from torch import nn

from ..config.schema import OptimConfig
from ..errors import ConfigError
from ..registry import Registry, RegistryError

SCHEDULES: Registry[Callable[[OptimConfig, int, float], float]] = Registry("lr schedule")


@SCHEDULES.register("multistep")
def multistep(cfg: OptimConfig, epochs: int, epoch: float) -> float:
    """lr x gamma at every milestone passed (epochs; the paper's schedule)."""
    return cfg.gamma ** bisect.bisect_right(sorted(cfg.milestones), epoch)


@SCHEDULES.register("cosine")
def cosine(cfg: OptimConfig, epochs: int, epoch: float) -> float:
    """Half-cosine from lr to min_lr over the run (after the warm-up)."""
    span = max(epochs - cfg.warmup_epochs, 1e-8)
    t = min(max(epoch - cfg.warmup_epochs, 0.0) / span, 1.0)
    floor = cfg.min_lr / cfg.lr if cfg.lr else 0.0
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))


@SCHEDULES.register("constant")
def constant(cfg: OptimConfig, epochs: int, epoch: float) -> float:
    """No decay."""
    return 1.0


def lr_factor(cfg: OptimConfig, epochs: int, epoch: float) -> float:
    """The lr multiplier at fractional ``epoch``: linear warm-up, then the schedule."""
    warm = min(1.0, epoch / cfg.warmup_epochs) if cfg.warmup_epochs > 0 else 1.0
    return warm * SCHEDULES.get(cfg.schedule)(cfg, epochs, epoch)


OptimizerFn = Callable[[list[nn.Parameter], OptimConfig, bool], torch.optim.Optimizer]
OPTIMIZERS: Registry[OptimizerFn] = Registry("optimizer")


@OPTIMIZERS.register("sgd")
def sgd(params: list[nn.Parameter], cfg: OptimConfig, fused: bool) -> torch.optim.Optimizer:
    """SGD with momentum (and Nesterov), weight decay on every parameter as released."""
    if cfg.nesterov and cfg.momentum <= 0:
        raise ConfigError("optim.nesterov=true needs optim.momentum > 0")
    return torch.optim.SGD(
        params,
        lr=cfg.lr,
        momentum=cfg.momentum,
        nesterov=cfg.nesterov,
        weight_decay=cfg.weight_decay,
        fused=fused or None,
    )


@OPTIMIZERS.register("adam")
def adam(params: list[nn.Parameter], cfg: OptimConfig, fused: bool) -> torch.optim.Optimizer:
    """Adam with L2 weight decay added to the gradient (as BoT trains: lr 3.5e-4, weight decay 5e-4)."""
    return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused or None)


@OPTIMIZERS.register("adamw")
def adamw(params: list[nn.Parameter], cfg: OptimConfig, fused: bool) -> torch.optim.Optimizer:
    """AdamW (decoupled weight decay)."""
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused or None)


#: how a method's branch learning rate decays beside the schedule, by optimizer step (``Method.branch_lr``)
BRANCH_DECAYS: dict[str, Callable[[int], float]] = {
    "none": lambda step: 1.0,
    # Caffe's local "power_inv" policy at localgamma 1e-4, localpower 0.75
    "power_inv": lambda step: (1.0 + 1e-4 * step) ** -0.75,
}


def _groups(model: nn.Module, params: list[nn.Parameter], cfg: OptimConfig, branch_lr: float) -> list:
    """One parameter group, or two when the branches train at ``branch_lr`` times the learning rate."""
    branches = getattr(model, "branches", None)
    if branch_lr == 1.0 or not isinstance(branches, nn.Module):
        return params
    own = {id(p) for p in branches.parameters()}
    rest = [p for p in params if id(p) not in own]
    return [{"params": rest}, {"params": [p for p in params if id(p) in own], "lr": cfg.lr * branch_lr}]


def build_optimizer(model: nn.Module, cfg: OptimConfig, branch_lr: float = 1.0) -> torch.optim.Optimizer:
    """The optimizer ``optim.name`` over every trainable parameter (a frozen one, such as a BNNeck's shift, is left
    out), the branches' in a group of their own at ``branch_lr`` times the learning rate when that is not 1 (a method's
    ``branch_lr``). On CUDA the fused kernel (one launch per step, learning rate read from a tensor when a
    CUDA graph replays the step)."""
    SCHEDULES.get(cfg.schedule)  # an unknown schedule fails before training starts
    try:
        make = OPTIMIZERS.get(cfg.name)
    except RegistryError as exc:  # an unknown name, with suggestions
        raise ConfigError(f"optim.name: {exc}") from None
    params = [p for p in model.parameters() if p.requires_grad]
    fused = bool(params) and all(p.device.type == "cuda" for p in params)
    return make(_groups(model, params, cfg, branch_lr), cfg, fused)


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    cfg: OptimConfig,
    epochs: int,
    steps_per_epoch: int,
    branch_decay: str = "none",
) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step LambdaLR: call ``step()`` after every optimizer step. A second parameter group (the branches at
    their own rate) follows the schedule times ``BRANCH_DECAYS[branch_decay]`` of the step."""

    def factor(step: int) -> float:
        return lr_factor(cfg, epochs, step / steps_per_epoch)

    decay = BRANCH_DECAYS[branch_decay]
    if len(optimizer.param_groups) == 2:
        return torch.optim.lr_scheduler.LambdaLR(optimizer, [factor, lambda step: factor(step) * decay(step)])
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
