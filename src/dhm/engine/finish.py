"""The end of a run, as its own step: evaluate the task's report splits for the last and the chosen checkpoint,
write the deploy file, the plots and ``summary.json``."""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..branches import unwrap
from ..branches.deploy import deployable
from ..deployed import deploy_payload
from ..tasks import LAST
from ..version import __version__
from . import dist as D
from .checkpoint import FORMAT, load_file, load_state, save_atomic
from .evaluate import evaluate
from .header import runtime_record
from .parts import Parts
from .plots import plot_history
from .runtime import Runtime
from .state import RunState


def finish_run(
    model: nn.Module,
    parts: Parts,
    runtime: Runtime,
    state: RunState,
    run_dir: Path,
    config: dict[str, Any],
    select: str,
) -> dict[str, Any]:
    """The run's ending: evaluate every report split of the task (``test`` for classification) with the last
    weights and with best.pt (chosen on the selection split by ``select``), write the deploy file, the plots and
    ``summary.json`` (last, so that its presence means the run is complete); returns the summary. A report split
    without a loader gives empty (None) entries."""
    task, dist = parts.task, runtime.dist

    def run_eval(loader) -> dict[str, float]:
        return evaluate(model, loader, dist.device, runtime.amp, task=task)

    reports = {name: parts.splits.get(name) for name in task.report_splits}
    last = {name: run_eval(loader) if loader is not None else {} for name, loader in reports.items()}
    best_path = run_dir / "best.pt"
    D.barrier()
    if best_path.is_file() and state.best_epoch != state.epoch:
        load_state(unwrap(parts.model), load_file(best_path, FORMAT)["model"], f"checkpoint {best_path}")
    if state.best_epoch != state.epoch:
        best = {name: run_eval(loader) if loader is not None else {} for name, loader in reports.items()}
    else:
        best = last
    best_record = state.history[state.best_epoch - 1] if state.history else {}
    prefix = f"{task.select_split}/"
    val_best = {k.removeprefix(prefix): v for k, v in best_record.items() if k.startswith(prefix)}
    first = task.report_splits[0]
    summary: dict[str, Any] = {
        **task.summary_entries(best[first], last[first], val_best),
        "best_epoch": state.best_epoch,
        "epochs": state.epoch,
        "wall_time_s": state.wall_time,
    }
    for name in task.report_splits:
        summary[name], summary[f"{name}_last"] = best[name], last[name]
    summary.update(
        {
            "val_best": val_best,
            "run_dir": str(run_dir),
            "world_size": dist.world,
            "device": str(dist.device),
            "runtime": runtime_record(runtime, config["train"]["amp"]),
            "versions": {"dhm": __version__, "torch": torch.__version__, "python": platform.python_version()},
            "config": config,
            "task": task.name,
            "select": "last epoch" if select == LAST else f"{task.select_split}/{select}",
        }
    )
    if dist.is_main:
        meta = parts.meta
        info = {
            "classes": meta.classes,
            "mean": meta.mean,
            "std": meta.std,
            "config": config,
            "input_size": meta.input_size,
        }
        deployed = deployable(unwrap(parts.model), (meta.model_spec or {}).get("head", "main"))
        save_atomic(deploy_payload(deployed, meta.model_spec, info), run_dir / "deploy.pt")
        marks = {
            p.report_key: (best[first][p.report_key], last[first][p.report_key])
            for p in task.panels
            if p.report_key in best[first] and p.report_key in last[first]
        }
        plot_history(state.history, run_dir, task.panels, best_epoch=state.best_epoch or None, reports=marks)
        if reports[first] is not None or val_best:
            print(task.summary_table(list(parts.head_names), val_best, best[first], last[first]), flush=True)
        tmp = run_dir / ".summary.json.tmp"
        tmp.write_text(json.dumps(summary, indent=2))
        tmp.replace(run_dir / "summary.json")
    return summary
