"""``dhm eval`` as a library function: a checkpoint or an export, evaluated by its run's task on its run's
validation and report splits (the data rebuilt from the config the file carries)."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import Config, config_from_dict
from ..config.io import apply_overrides
from ..deployed import OWN_MODEL, checkpoint_kind, load_deployed
from ..errors import DHMError
from ..files import load_file, load_state
from ..registry import RegistryError
from ..tasks import Task, get_task
from . import dist as D
from .build import build_data, build_model
from .evaluate import evaluate
from .runtime import resolve_runtime


@dataclass
class CheckpointReport:
    """The task of a checkpoint's run and the metrics of each evaluated split, by split name."""

    task: Task
    splits: dict[str, dict[str, float]]
    deployed: bool = False  # a deploy file or an export: the main head only


#: the keys that decide which images a run's splits hold: an evaluation must not change them
SPLIT_KEYS = ("name", "split_seed", "val_size", "val_by", "train_subset", "options")


def _same_splits(own: Config, cfg: Config, path: str | Path) -> None:
    """A DHMError when the overrides change which images the run's splits hold (data.root may move)."""
    for key in SPLIT_KEYS:
        was, now = getattr(own.data, key), getattr(cfg.data, key)
        if was != now:
            raise DHMError(
                f"data.{key}: {path}'s run split its data with {was!r}; evaluating with {now!r} would measure other "
                "images under the same split names (only where the data lives, data.root, may change)"
            )


def evaluate_checkpoint(
    path: str | Path, overrides: Sequence[str] = (), heads: bool = False, options: dict[str, Any] | None = None
) -> CheckpointReport:
    """The metrics of ``path`` (best.pt / last.pt: every head with ``heads``; deploy.pt and pt / safetensors
    exports: the deployed backbone) on each evaluation split of its run, by split name (``val`` first when the run
    had one); ``options`` are the task's evaluation options (retrieval: ``flip``, ``rerank``).
    ``overrides`` are ``key=value`` config changes, e.g. ``data.root=...`` for another data location.

    Example:
        >>> dhm.evaluate_checkpoint("runs/demo/20261126-101500/best.pt", heads=True).splits["test"]
    """
    training = checkpoint_kind(path) == "training"
    ckpt = load_file(path) if training else None
    deployed = None if training else load_deployed(path)
    if training and "model_spec" in ckpt and ckpt["model_spec"] is None:
        raise DHMError(OWN_MODEL.format(path=path, key="model"))
    data = dict(ckpt["config"] or {}) if training else dict(deployed.config)
    if not data:  # an imported checkpoint or a dhm.fit export: the data to evaluate on must be given
        if not any(o.startswith("data.") for o in overrides):
            raise DHMError(
                f"{path} does not carry the config of a dhm run (an imported checkpoint?): name the data to "
                "evaluate on, e.g. dhm eval FILE data.name=cifar100 data.root=DIR"
            )
        spec = ckpt.get("model_spec") if training else deployed.payload.get("model")
        data = {"model": {"name": spec["name"]}} if isinstance(spec, dict) else {}
    own = config_from_dict(copy.deepcopy(data)) if data.get("data") else None
    cfg = config_from_dict(apply_overrides(data, overrides))
    if own is not None:
        _same_splits(own, cfg, path)
    runtime = resolve_runtime(cfg.train, D.setup(cfg.train.device))
    try:
        task = get_task(cfg.train.task)
    except RegistryError as exc:
        raise DHMError(f"train.task: {exc}") from None
    unread = sorted(set(options or {}) - set(task.eval_options))
    if unread:
        flags = " ".join(f"--{o.replace('_', '-')}" for o in unread)
        raise DHMError(f"{flags}: the {task.name} task has no such evaluation option ({path} is a {task.name} run)")
    run_data = build_data(cfg, runtime.dist, runtime.channels_last, task)
    if deployed is not None:  # the plain backbone: the deployed head only
        model = deployed.model.to(runtime.device)
    else:
        in_channels = cfg.model.in_channels or run_data.bundle.channels
        model = build_model(cfg, run_data.num_classes, in_channels).to(runtime.device)
        load_state(model, ckpt["model"], f"checkpoint {path}")
    names = [task.select_split, *task.report_splits]

    def split_options(name: str) -> dict[str, Any] | None:  # pictures go to a folder per split
        if not options or not options.get("rank_images"):
            return options
        return {**options, "rank_images": Path(options["rank_images"]) / name}

    splits = {
        name: evaluate(
            model,
            run_data.splits[name],
            runtime.device,
            runtime.amp,
            heads=heads,
            task=task,
            options=split_options(name),
        )
        for name in names
        if run_data.splits.get(name) is not None
    }
    return CheckpointReport(task, splits, deployed=deployed is not None)
