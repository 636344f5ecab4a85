"""``dhm eval`` as a library function: a checkpoint or an export, evaluated by its run's task on its run's
validation and report splits (the data rebuilt from the config the file carries)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import config_from_dict
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
    cfg = config_from_dict(apply_overrides(data, overrides))
    runtime = resolve_runtime(cfg.train, D.setup(cfg.train.device))
    try:
        task = get_task(cfg.train.task)
    except RegistryError as exc:
        raise DHMError(f"train.task: {exc}") from None
    run_data = build_data(cfg, runtime.dist, runtime.channels_last, task)
    if deployed is not None:  # the plain backbone: the deployed head only
        model = deployed.model.to(runtime.device)
    else:
        in_channels = cfg.model.in_channels or run_data.bundle.channels
        model = build_model(cfg, run_data.num_classes, in_channels).to(runtime.device)
        load_state(model, ckpt["model"], f"checkpoint {path}")
    names = [task.select_split, *task.report_splits]
    splits = {
        name: evaluate(
            model, run_data.splits[name], runtime.device, runtime.amp, heads=heads, task=task, options=options
        )
        for name in names
        if run_data.splits.get(name) is not None
    }
    return CheckpointReport(task, splits, deployed=deployed is not None)
