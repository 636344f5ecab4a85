"""``dhm compare``: every mode x every seed under one recipe, resumable, then a mean +- std table and plots.

Modes are methods (:mod:`dhm.methods`), so plain training, label smoothing, deep supervision, DHM and its variants
run under the same recipe, data split and schedule. Finished runs (with ``summary.json``) are skipped; unfinished
ones resume."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..config import load_config
from .modes import mode_overrides, run_dir, seed_list
from .plots import plot, plot_dynamics
from .table import summarise, to_markdown


def run_compare(
    recipe: str,
    seeds: int | str | Sequence[int],
    modes: Sequence[str],
    overrides: Sequence[str] = (),
    out: str | Path | None = None,
    log: Callable[[str], None] = print,
    jobs: int = 1,
    train_runs: bool = True,
) -> dict[str, Any]:
    """Train (or skip, or resume) every mode x seed, then summarise. Returns the summary dict.

    Args:
        jobs: runs side by side, each in its own process (``1``: one after the other, in this process).
        train_runs: ``False`` only summarises what is there (unfinished runs are listed with their progress).

    Example:
        >>> run_compare("demo", seeds=3, modes=["ce", "dsl", "dhm"], overrides=["train.epochs=5"])
    """
    from ..engine import train
    from ..jobs import Job, dhm_argv, mps_daemon, run_jobs

    base = load_config(recipe, overrides)
    root = Path(out) if out else Path(base.train.runs_root) / "compare" / base.name
    seeds = seed_list(seeds)
    for mode in modes:
        mode_overrides(mode, base)
    pending: list[tuple[str, int, list[str]]] = []
    for mode in modes:
        for seed in seeds:
            directory = run_dir(root, mode, seed)
            if (directory / "summary.json").is_file():
                log(f"[compare] {mode} seed {seed}: done, skipped")
                continue
            extra = [
                *mode_overrides(mode, base),
                f"train.seed={seed}",
                f"train.out_dir={directory}",
                "train.resume=auto",
            ]
            load_config(recipe, [*overrides, *extra])  # a bad override stops here, before any run starts
            pending.append((mode, seed, [*overrides, *extra]))
    if train_runs and jobs > 1 and pending:
        batch = [
            Job(f"{m} seed {s}", dhm_argv("train", recipe, *o), run_dir(root, m, s) / "train.log")
            for m, s, o in pending
        ]
        with mps_daemon(root / ".mps", log):
            run_jobs(batch, jobs, log)
    elif train_runs:
        for mode, seed, args in pending:
            log(f"[compare] {mode} seed {seed}: training in {run_dir(root, mode, seed)}")
            train(load_config(recipe, args))
    result = summarise(root, modes, seeds)
    result["recipe"], result["overrides"] = recipe, list(overrides)
    (root / "compare.json").write_text(json.dumps(result, indent=1))
    (root / "compare.md").write_text(to_markdown(result) + "\n")
    plot(result, root / "compare.png")
    plot_dynamics(root, modes, seeds, root / "compare_dynamics.png", result["task"])
    return result
