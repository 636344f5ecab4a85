"""What a run trains, as one object: the model, the loss, the optimizer and its schedule, the loaders, and what the
checkpoints record about them. Built from a config (:func:`build_parts`) or around a user's own model and loaders
(:mod:`dhm.engine.fit`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from ..branches import DHMModel, head_dims
from ..branches.deploy import deployable
from ..config import Config
from ..data.sizes import image_hw
from ..errors import ConfigError
from ..losses import Objective
from ..methods import get_method
from ..registry import RegistryError
from ..steps import run_kind
from ..tasks import Task, get_task
from . import dist as D
from .build import build_data, build_loss, build_model, method_step, model_spec
from .optim import build_optimizer, build_scheduler
from .runtime import Runtime


class Loader(Protocol):
    """What the engine iterates: batches ``(images, labels)`` already on the run's device."""

    steps: int  # optimizer steps per epoch (training loaders)

    def set_epoch(self, epoch: int) -> None: ...

    def __iter__(self): ...

    def __len__(self) -> int: ...


@dataclass
class RunMeta:
    """What checkpoints and the deploy file record besides the weights."""

    classes: list[str]
    mean: list[float]
    std: list[float]
    input_size: list[int]  # C, H, W of one image
    model_spec: dict[str, Any] | None  # rebuilds the plain backbone (None: a user's own model)


@dataclass
class Parts:
    """Everything one run trains and reads: the training loader and the evaluation splits by name (``val``,
    ``test``, ...; a split that is absent is not evaluated), and the task that measures them."""

    model: nn.Module
    loss_fn: Objective
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    train: Loader
    splits: dict[str, Loader]
    meta: RunMeta
    task: Task = field(default_factory=lambda: get_task("classification"))
    step: str = "eager"  # the registered step kind (dhm.steps.STEPS) the method trains with

    def __post_init__(self) -> None:
        self.splits = {name: loader for name, loader in self.splits.items() if loader is not None}

    @property
    def head_names(self) -> tuple[str, ...]:
        return tuple(self.model.head_names) if isinstance(self.model, DHMModel) else ("main",)

    @property
    def val(self) -> Loader | None:
        """The split that selects the checkpoint (the task's ``select_split``)."""
        return self.splits.get(self.task.select_split)

    @property
    def test(self) -> Loader | None:
        """The first split the task reports at the end."""
        return self.splits.get(self.task.report_splits[0])


def steps_per_epoch(loader: Loader, limit_batches: int) -> int:
    """Optimizer steps of one epoch, cut to ``train.limit_batches`` when that is set."""
    return min(loader.steps, limit_batches) if limit_batches > 0 else loader.steps


def build_parts(cfg: Config, runtime: Runtime) -> Parts:
    """Seed, then read the data and build the model, loss, optimizer and schedule of ``cfg`` on the runtime's
    device."""
    dist, channels_last = runtime.dist, runtime.channels_last
    D.seed_everything(cfg.train.seed, cfg.train.deterministic)
    try:
        task = get_task(cfg.train.task)
    except RegistryError as exc:
        raise ConfigError(f"train.task: {exc}") from None
    data = build_data(cfg, dist, channels_last, task)
    in_channels = cfg.model.in_channels or data.bundle.channels
    model = build_model(cfg, data.num_classes, in_channels).to(dist.device)
    try:  # what deploy.pt will hold, refused now rather than after training
        deployable(model, cfg.model.deploy)
    except (ValueError, RegistryError) as exc:
        raise ConfigError(f"model.deploy={cfg.model.deploy}: {exc}") from None
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    heads = model.head_names if isinstance(model, DHMModel) else None
    samples = len(data.train.source) if hasattr(data.train, "source") else None
    loss_fn = build_loss(cfg, heads, data.num_classes, head_dims(model), samples).to(dist.device)
    branch_lr, branch_decay = get_method(cfg.loss.mode).branch_lr(cfg.loss.options)
    optimizer = build_optimizer(model, cfg.optim, branch_lr)
    steps = steps_per_epoch(data.train, cfg.train.limit_batches)
    scheduler = build_scheduler(optimizer, cfg.optim, cfg.train.epochs, steps, branch_decay)
    train_images = getattr(data.bundle.train, "images", None)
    size = image_hw(cfg.data.image_size) or (224, 224)
    input_size = list(train_images.shape[1:]) if isinstance(train_images, Tensor) else [in_channels, *size]
    meta = RunMeta(
        classes=list(data.bundle.classes),
        mean=list(data.bundle.mean),
        std=list(data.bundle.std),
        input_size=input_size,
        model_spec=model_spec(cfg, data.num_classes, in_channels),
    )
    step = run_kind(method_step(cfg), runtime.cuda_graph)
    return Parts(model, loss_fn, optimizer, scheduler, data.train, data.splits, meta, task, step)
