"""Train a user's own model on their own loaders through the engine: run directory, checkpoints every epoch,
resume, metrics files, plots, deploy file and summary, exactly as ``dhm train`` writes them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..branches import DHMModel
from ..config import load_config
from ..data.own import DeviceLoader
from ..data.own_checks import BatchCheck, model_probe, num_outputs
from ..errors import ConfigError
from ..methods import get_method
from ..steps import run_kind
from . import dist as D
from .build import build_loss, method_step
from .optim import build_optimizer, build_scheduler
from .parts import Parts, RunMeta, steps_per_epoch
from .runtime import resolve_runtime
from .trainer import Trainer


def _settings(settings: Sequence[str] | Mapping[str, Any]) -> list[str]:
    if isinstance(settings, Mapping):
        return [f"{k}={v}" for k, v in settings.items()]
    return list(settings)


def fit(
    model: nn.Module,
    train_loader: Iterable,
    val_loader: Iterable | None = None,
    test_loader: Iterable | None = None,
    *,
    out_dir: str | Path,
    settings: Sequence[str] | Mapping[str, Any] = (),
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    classes: Sequence[str] = (),
) -> dict[str, Any]:
    """Train ``model`` (a :class:`~dhm.DHMModel` from :func:`~dhm.attach_branches`, or any plain classifier with
    a method of the plain backbone, the default for one) on batches of ``(images, labels)``. The best epoch is chosen on ``val_loader`` (else the last);
    ``test_loader`` is evaluated at the end. ``settings`` are the config keys of ``dhm config --keys`` (``train.*``,
    ``optim.*``, ``loss.*``), as ``key=value`` strings or a mapping; ``train.resume=auto`` continues the run in
    ``out_dir``. Without ``optimizer``/``scheduler`` the config's SGD and schedule are built; a scheduler of yours is
    stepped after every optimizer step.
    Under torchrun, join the process group first (:func:`dhm.engine.dist.setup`) and give each process its shard
    (a ``DistributedSampler``). Returns the summary that ``summary.json`` holds.

    Example:
        >>> model = dhm.attach_branches(torchvision.models.resnet18(num_classes=10), dhm.paper_branches("resnet18"))
        >>> summary = dhm.fit(model, train_loader, val_loader, test_loader, out_dir="runs/mine",
        ...                   settings={"train.epochs": 30, "optim.lr": 0.05})
    """
    branched = isinstance(model, DHMModel)
    batch = getattr(train_loader, "batch_size", None)
    defaults = [
        "name=fit",
        f"model.name=own:{type(model.backbone if branched else model).__name__}",
        "data.name=own",
        f"train.out_dir={out_dir}",
        f"loss.mode={'dhm' if branched else 'ce'}",
        *([f"data.batch_size={batch}"] if batch else []),
        *([f"data.eval_batch_size={val_loader.batch_size}"] if getattr(val_loader, "batch_size", None) else []),
    ]
    cfg = load_config(None, [*defaults, *_settings(settings)])
    if get_method(cfg.loss.mode).layout != "none" and not branched:
        raise ConfigError(
            f"loss.mode={cfg.loss.mode} trains several heads: give a model from dhm.attach_branches(net, specs), "
            "or choose a method of the plain backbone (`dhm methods`, layout none)"
        )
    runtime = resolve_runtime(cfg.train)
    dist, channels_last = runtime.dist, runtime.channels_last
    D.seed_everything(cfg.train.seed, cfg.train.deterministic)
    model = model.to(dist.device, memory_format=torch.channels_last) if channels_last else model.to(dist.device)
    accum = cfg.train.accum_steps
    classes_out, probe = num_outputs(model), model_probe(model)
    train = DeviceLoader(train_loader, dist.device, accum, channels_last, check=BatchCheck("train", classes_out, probe))
    val, test = (
        DeviceLoader(loader, dist.device, 1, channels_last, name, BatchCheck(name, classes_out, probe))
        if loader is not None
        else None
        for loader, name in ((val_loader, "validation"), (test_loader, "test"))
    )
    loss_fn = build_loss(cfg, model.head_names if branched else None).to(dist.device)
    if "features" in loss_fn.needs:  # a method whose terms read pooled features (bot*, ...)
        if not branched:
            raise ConfigError(
                f"loss.mode={cfg.loss.mode} reads the heads' features: give dhm.attach_branches(model, ...)"
            )
        model.features = True
    branch_lr, branch_decay = get_method(cfg.loss.mode).branch_lr(cfg.loss.options)
    optimizer = optimizer or build_optimizer(model, cfg.optim, branch_lr)
    steps = steps_per_epoch(train, cfg.train.limit_batches)
    scheduler = scheduler or build_scheduler(optimizer, cfg.optim, cfg.train.epochs, steps, branch_decay)
    meta = RunMeta(classes=list(classes), mean=[], std=[], input_size=[], model_spec=None)
    step = run_kind(method_step(cfg), runtime.cuda_graph)
    parts = Parts(model, loss_fn, optimizer, scheduler, train, {"val": val, "test": test}, meta, step=step)
    return Trainer(cfg, parts, runtime).fit()
