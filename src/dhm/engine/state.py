"""What a run's checkpoint holds besides the files it names: the run's progress (:class:`RunState`), and the
two directions between a run's parts and one checkpoint dict (:func:`run_checkpoint`, :func:`restore_run`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..branches import unwrap
from ..errors import CheckpointError
from ..version import __version__
from . import dist as D
from .checkpoint import FORMAT, RESUME_NEEDS, check_compatible, load_file, load_state, pack_numpy_rng, unpack_numpy_rng
from .parts import Parts


@dataclass
class RunState:
    """What a checkpoint carries besides the weights and the optimizer."""

    epoch: int = 0  # epochs completed
    best_val: float = float("-inf")  # the selection score of the best epoch (negated where lower is better)
    best_epoch: int = 0
    wall_time: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)


def run_checkpoint(state: RunState, parts: Parts, scaler: torch.amp.GradScaler, config: dict[str, Any]) -> dict:
    """The checkpoint dict of a run after ``state.epoch`` epochs (weights of the model without its wrappers)."""
    rng = D.rng_state()
    rng["numpy"] = pack_numpy_rng(rng["numpy"])
    meta = parts.meta
    return {
        "format": FORMAT,
        "dhm_version": __version__,
        "config": config,
        "model": unwrap(parts.model).state_dict(),
        "optimizer": parts.optimizer.state_dict(),
        "loss": parts.loss_fn.state_dict(),  # a term's own parameters (center loss), else empty
        "loss_optimizers": [opt.state_dict() for opt in getattr(parts.loss_fn, "own_optimizers", ())],
        "scheduler": parts.scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "state": {
            "epoch": state.epoch,
            "best_val": state.best_val,
            "best_epoch": state.best_epoch,
            "wall_time": state.wall_time,
            "history": state.history,
        },
        "rng": rng,
        "model_spec": meta.model_spec,
        "classes": meta.classes,
        "input_size": meta.input_size,
        "mean": meta.mean,
        "std": meta.std,
    }


def restore_run(path: Path, parts: Parts, scaler: torch.amp.GradScaler, config: dict[str, Any]) -> RunState:
    """Load checkpoint ``path`` into the parts (weights, optimizer, schedule, loss scaler) and the RNGs; returns the
    run's progress. A checkpoint of other settings is refused, naming what differs."""
    ckpt = load_file(path, FORMAT, need=RESUME_NEEDS)
    check_compatible(ckpt, config, path)
    load_state(parts.model, ckpt["model"], f"checkpoint {path}")
    try:
        parts.optimizer.load_state_dict(ckpt["optimizer"])
        if ckpt.get("loss") or parts.loss_fn.state_dict():  # older checkpoints hold no loss state (none was kept)
            parts.loss_fn.load_state_dict(ckpt.get("loss", {}))
        for opt, saved in zip(getattr(parts.loss_fn, "own_optimizers", ()), ckpt.get("loss_optimizers", [])):
            opt.load_state_dict(saved)
        parts.scheduler.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
    except (ValueError, KeyError, RuntimeError) as exc:
        raise CheckpointError(f"checkpoint {path}: optimizer state does not fit: {exc}") from None
    s = ckpt["state"]
    rng = dict(ckpt["rng"])
    rng["numpy"] = unpack_numpy_rng(rng["numpy"])
    D.set_rng_state(rng)
    return RunState(s["epoch"], s["best_val"], s["best_epoch"], s["wall_time"], list(s["history"]))
