"""The end of a run, as its own step: test, deploy file, plots and summary."""

from __future__ import annotations

import json
import platform
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..branches import strip, unwrap
from ..version import __version__
from . import dist as D
from .checkpoint import FORMAT, deploy_payload, load_file, load_state, save_atomic
from .evaluate import evaluate
from .plots import plot_history
from .recorder import summary_table

if TYPE_CHECKING:
    from .trainer import Trainer


def finish_run(t: Trainer, model: nn.Module) -> dict[str, Any]:
    """The run's ending: test the last and the best checkpoint (chosen on validation), write the deploy file,
    the plots and ``summary.json`` (last, so that its presence means the run is complete); returns the summary.
    Without a test loader the test entries are empty (None)."""
    device, test, meta = t.dist.device, t.parts.test, t.parts.meta
    test_last = evaluate(model, test, device, t.amp) if test is not None else {}
    best_path = t.run_dir / "best.pt"
    D.barrier()
    if best_path.is_file() and t.state.best_epoch != t.state.epoch:
        load_state(unwrap(t.model), load_file(best_path, FORMAT)["model"], f"checkpoint {best_path}")
    if test is not None and t.state.best_epoch != t.state.epoch:
        test_best = evaluate(model, test, device, t.amp)
    else:
        test_best = test_last
    best_record = t.state.history[t.state.best_epoch - 1] if t.state.history else {}
    val_best = {k.removeprefix("val/"): v for k, v in best_record.items() if k.startswith("val/")}
    summary = {
        "test_acc1": test_best.get("acc1/main"),
        "test_acc1_last": test_last.get("acc1/main"),
        "best_val_acc1": val_best.get("acc1/main"),
        "best_epoch": t.state.best_epoch,
        "epochs": t.state.epoch,
        "wall_time_s": t.state.wall_time,
        "test": test_best,
        "test_last": test_last,
        "val_best": val_best,
        "run_dir": str(t.run_dir),
        "world_size": t.dist.world,
        "device": str(device),
        "versions": {"dhm": __version__, "torch": torch.__version__, "python": platform.python_version()},
        "config": t.config_dict,
    }
    if t.dist.is_main:
        backbone = strip(unwrap(t.model))
        info = {
            "classes": meta.classes,
            "mean": meta.mean,
            "std": meta.std,
            "config": t.config_dict,
            "input_size": meta.input_size,
        }
        save_atomic(deploy_payload(backbone, meta.model_spec, info), t.run_dir / "deploy.pt")
        plot_history(t.state.history, t.run_dir)
        if test is not None or val_best:
            print(summary_table(list(t.head_names), val_best, test_best, test_last), flush=True)
        tmp = t.run_dir / ".summary.json.tmp"
        tmp.write_text(json.dumps(summary, indent=2))
        tmp.replace(t.run_dir / "summary.json")
    return summary
