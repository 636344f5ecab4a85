"""The comparison plots: per-seed scores with mean +- std per mode, and the per-epoch dynamics of every mode."""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..tasks import get_task
from .modes import run_dir, seed_list


def plot(result: dict[str, Any], path: Path) -> None:
    """Per-seed test accuracies (dots) and mean +- std (bars) per mode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = list(result["modes"])
    if not modes:
        return
    fig, ax = plt.subplots(figsize=(1.3 * len(modes) + 2, 4))
    for i, mode in enumerate(modes):
        s = result["modes"][mode]["test_best"]
        ax.errorbar(
            i, s["mean"], yerr=s["std"], fmt="s", capsize=6, color="C0", label="mean +- std" if i == 0 else None
        )
        ax.plot([i] * len(s["values"]), s["values"], "o", color="C1", alpha=0.6, label="one seed" if i == 0 else None)
    ax.set_xticks(range(len(modes)), modes, rotation=20)
    task = get_task(result.get("task", "classification"))
    what, unit = task.labels.get(result.get("metric", task.primary), (result.get("metric", task.primary), ""))
    ax.set_ylabel(f"{task.report_splits[0]} {what}{unit}, checkpoint chosen on validation")
    ax.set_title(f"{result.get('recipe', Path(result['root']).name)}: {len(result['seeds'])} seed(s) per mode")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _histories(root: Path, mode: str, seeds: int | Sequence[int]) -> list[list[dict[str, Any]]]:
    """The per-epoch records of every seed of ``mode`` that has any (finished or not)."""
    out = []
    for seed in seed_list(seeds):
        path = run_dir(root, mode, seed) / "metrics.jsonl"
        if path.is_file():
            records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            if records:
                out.append(records)
    return out


def _mean_series(histories: list[list[dict[str, Any]]], key: str) -> tuple[list[int], list[float]]:
    """Epochs and the mean over seeds of ``key`` (epochs every seed has reached)."""
    length = min(len(h) for h in histories)
    values = [[h[e].get(key, math.nan) for h in histories] for e in range(length)]
    return list(range(1, length + 1)), [statistics.fmean(v) for v in values]


def plot_dynamics(
    root: Path, modes: Sequence[str], seeds: int | Sequence[int], path: Path, result_task: str = "classification"
) -> Path | None:
    """What happens during training, one row per mode (mean over seeds): train (dashed) and validation (solid)
    accuracy of every head; the loss terms (cross-entropy per head, the mimicking sum); and how often all heads
    predict the main head's class on the validation split."""
    rows = [(m, _histories(root, m, seeds)) for m in modes]
    rows = [(m, h) for m, h in rows if h]
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    task = get_task(result_task)
    prefix = task.head_metric("") or ""
    # One y-scale per column, so that rows (modes) compare at a glance.
    fig, axes = plt.subplots(len(rows), 3, figsize=(14, 2.8 * len(rows)), squeeze=False, sharey="col")
    for (mode, histories), (acc_ax, loss_ax, agree_ax) in zip(rows, axes):
        val = f"{task.select_split}/{prefix}"
        keys = [k for k in histories[0][0] if prefix and k.startswith(val) and not k.endswith("ensemble")]
        for i, key in enumerate(keys):
            head = key.removeprefix(val)
            train_key = f"train/{task.train_metric}" if head == "main" else f"train/{prefix}{head}"
            acc_ax.plot(*_mean_series(histories, key), color=f"C{i}", label=f"{head} val")
            acc_ax.plot(*_mean_series(histories, train_key), color=f"C{i}", linestyle="--", label=f"{head} train")
        for i, key in enumerate(k for k in histories[0][0] if k.startswith("train/ce/") or k == "train/kl"):
            loss_ax.plot(*_mean_series(histories, key), color=f"C{i}", label=key.removeprefix("train/"))
        if "val/agree" in histories[0][0]:
            epochs, agree = _mean_series(histories, "val/agree")
            agree_ax.plot(epochs, agree, color="C0")
            main_key = f"{val}main"
            main_acc = _mean_series(histories, main_key)[1][-1] if main_key in histories[0][0] else math.nan
            if agree and agree[-1] >= 99.5 and main_acc < 25:  # agreement with nothing learnt: one class for all
                agree_ax.text(
                    0.5,
                    0.3,
                    f"all agree, main head at {main_acc:.0f}%:\nthe heads may all predict one class",
                    ha="center",
                    transform=agree_ax.transAxes,
                    fontsize=8,
                    color="C3",
                )
        else:
            note = "one head" if len(keys) == 1 else "not recorded by this run"
            agree_ax.text(0.5, 0.5, note, ha="center", va="center", transform=agree_ax.transAxes)
        acc_ax.set_ylabel(f"{mode}\n{task.labels.get(task.primary, (task.primary, ''))[0]}")
        loss_ax.set_ylabel("loss term")
        agree_ax.set_ylabel("all heads agree (%)")
        for ax in (acc_ax, loss_ax, agree_ax):
            ax.grid(alpha=0.3)
            ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        for ax in (acc_ax, loss_ax):
            if ax.lines:
                ax.legend(fontsize=6, ncol=2)
    fig.suptitle(f"training dynamics, mean over seeds ({root.name})")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
