"""``dhm compare``: every mode x every seed under one recipe, resumable, then a mean +- std table and a plot.

Modes are named override sets, so plain training, deep supervision, DHM and its dynamic variants run under the
same recipe, data split and schedule. Finished runs (with ``summary.json``) are skipped; unfinished ones resume."""

from __future__ import annotations

import json
import math
import re
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .config import Config, load_config
from .errors import ConfigError
from .registry import Registry

COMPARE_MODES: Registry[Callable[[Config], list[str]]] = Registry("comparison mode")


# Every mode sets all the dynamic knobs, so a recipe's own choice (e.g. the demo's ramp-up) never leaks into "dhm".
STATIC = ("loss.dynamic=null", "loss.rampup_epochs=0", "model.dynamic_fork=false")


def _mode(name: str, *overrides: str) -> None:
    COMPARE_MODES.register(name)(lambda cfg: [*STATIC, *overrides])


_mode("ce", "loss.mode=ce")
_mode("ls", "loss.mode=ce", "loss.label_smoothing=0.1")  # plain training with label smoothing 0.1
_mode("dsl", "loss.mode=dsl")
_mode("dhm", "loss.mode=dhm")
_mode("dhm-official", "loss.mode=dhm", "loss.dynamic=official")
_mode("dhm-bernoulli", "loss.mode=dhm", "loss.dynamic=bernoulli(0.5)")
_mode("dhm-fork", "loss.mode=dhm", "model.dynamic_fork=true")
COMPARE_MODES.register("dhm-rampup")(  # a quarter of the run, sigmoid shape
    lambda cfg: [*STATIC, "loss.mode=dhm", "loss.rampup=sigmoid", f"loss.rampup_epochs={max(1, cfg.train.epochs // 4)}"]
)
COMPARE_MODES.register("dhm-gentle")(  # the loss.preset chosen in RESULTS.md: alpha 0.5, sigmoid ramp over half the run
    lambda cfg: ["loss.dynamic=null", "model.dynamic_fork=false", "loss.mode=dhm", "loss.preset=gentle"]
)


def mode_overrides(mode: str, cfg: Config) -> list[str]:
    """The overrides of ``mode``: a registered name, optionally followed by ``+key=value`` settings of its own,
    e.g. ``dhm-rampup+loss.rampup_epochs=15+loss.temperature=3`` (for sweeps; they apply after the mode's)."""
    base, *extra = re.split(r"\+(?=[a-z_]+\.[a-z_]+=)", mode)
    overrides = COMPARE_MODES.get(base)(cfg)
    if any("=" not in e for e in extra):
        raise ConfigError(f"mode {mode!r}: settings after the name are +section.key=value")
    return [*overrides, *extra]


def run_dir(root: Path, mode: str, seed: int) -> Path:
    return root / mode / f"seed{seed}"


def seed_list(seeds: int | str | Sequence[int]) -> list[int]:
    """``3`` (a count: seeds 0, 1, 2), ``"3"``, ``"0,4,7"`` or a sequence of seeds -> the list of seeds."""
    if isinstance(seeds, str):
        parts = [p.strip() for p in seeds.split(",") if p.strip()]
        try:
            values = [int(p) for p in parts]
        except ValueError:
            raise ConfigError(f"--seeds takes a count or a comma-separated list of seeds, got {seeds!r}") from None
        seeds = values[0] if len(values) == 1 and "," not in seeds else values
    if isinstance(seeds, int):
        if seeds < 1:
            raise ConfigError(f"--seeds must be >= 1, got {seeds}")
        return list(range(seeds))
    values = list(seeds)
    if not values or any(v < 0 for v in values) or len(set(values)) != len(values):
        raise ConfigError(f"--seeds needs distinct seeds >= 0, got {values}")
    return values


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
    from .engine import train
    from .jobs import Job, dhm_argv, mps_daemon, run_jobs

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
    plot_dynamics(root, modes, seeds, root / "compare_dynamics.png")
    return result


def _stats(values: list[float]) -> dict[str, float]:
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": mean, "std": std, "n": len(values), "values": values}


def summarise(root: Path, modes: Sequence[str], seeds: int | Sequence[int]) -> dict[str, Any]:
    """Mean +- std (sample std) over seeds of the test accuracy of the checkpoint chosen on validation, of the last
    epoch, and of the best validation accuracy."""
    rows, unfinished = {}, {}
    for mode in modes:
        done = [s for s in seed_list(seeds) if (run_dir(root, mode, s) / "summary.json").is_file()]
        for s in sorted(set(seed_list(seeds)) - set(done)):
            unfinished[f"{mode} seed {s}"] = _progress(run_dir(root, mode, s))
        if not done:
            continue
        summaries = [json.loads((run_dir(root, mode, s) / "summary.json").read_text()) for s in done]
        rows[mode] = {
            "test_best": _stats([s["test_acc1"] for s in summaries]),
            "test_last": _stats([s["test_acc1_last"] for s in summaries]),
            "val_best": _stats([s["best_val_acc1"] for s in summaries if s["best_val_acc1"] is not None] or [math.nan]),
            "train_last": _stats([_last_train_acc(run_dir(root, mode, s)) for s in done]),
            "wall_time_s": _stats([s["wall_time_s"] for s in summaries]),
            "epochs": summaries[0]["epochs"],
            "test_heads": _head_stats(summaries),
            "device": summaries[0].get("device", ""),
        }
    return {"root": str(root), "seeds": seed_list(seeds), "modes": rows, "unfinished": unfinished}


def _last_train_acc(directory: Path) -> float:
    """The main head's training accuracy (%) in the run's last epoch (metrics.jsonl), NaN when not recorded."""
    lines = (directory / "metrics.jsonl").read_text().splitlines() if (directory / "metrics.jsonl").is_file() else []
    return float(json.loads(lines[-1]).get("train/acc1", math.nan)) if lines else math.nan


def _head_stats(summaries: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Test accuracy of every head and of the ensemble (best-val checkpoint), mean +- std over seeds."""
    keys = [k for k in summaries[0].get("test", {}) if k.startswith("acc1/")]
    return {k.removeprefix("acc1/"): _stats([s["test"][k] for s in summaries]) for k in keys}


def _progress(directory: Path) -> dict[str, Any]:
    """Epochs done and the latest validation accuracy of an unfinished run (from its metrics file)."""
    metrics = directory / "metrics.jsonl"
    if not metrics.is_file():
        return {"epochs_done": 0}
    lines = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    if not lines:
        return {"epochs_done": 0}
    last = lines[-1]
    return {"epochs_done": last["epoch"], "val_acc1": last.get("val/acc1/main"), "train_acc1": last.get("train/acc1")}


def to_markdown(result: dict[str, Any]) -> str:
    """The comparison table, plus each mode's difference to ``ce`` and ``dsl`` in units of the pooled std."""
    rows = result["modes"]
    lines = [
        "| mode | n | test acc, best-val ckpt (%) | test acc, last epoch (%) | best val acc (%) | train acc, last epoch "
        "(%) | time/run (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for mode, r in rows.items():
        keys = ("test_best", "test_last", "val_best", "train_last")
        cells = [f"{r[k]['mean']:.2f} +- {r[k]['std']:.2f}" if k in r else "-" for k in keys]
        lines.append(
            f"| {mode} | {r['test_best']['n']} | " + " | ".join(cells) + f" | {r['wall_time_s']['mean']:.0f} |"
        )
    lines.append("")
    heads = [m for m, r in rows.items() if len(r.get("test_heads", {})) > 1]
    if heads:
        lines += [
            "Every head and their ensemble (test acc of the best-val checkpoint, %):",
            "",
            "| mode | " + " | ".join(rows[heads[0]]["test_heads"]) + " |",
            "|---|" + "---|" * len(rows[heads[0]]["test_heads"]),
        ]
        for mode in heads:
            cells = [f"{s['mean']:.2f} +- {s['std']:.2f}" for s in rows[mode]["test_heads"].values()]
            lines.append(f"| {mode} | " + " | ".join(cells) + " |")
        lines.append("")
    for name, p in result.get("unfinished", {}).items():
        lines.append(
            f"* unfinished: {name}, {p['epochs_done']} epochs done"
            + (f", val acc {p['val_acc1']:.2f}" if p.get("val_acc1") is not None else "")
        )
    for ref in ("ce", "dsl"):
        if ref not in rows:
            continue
        for mode, r in rows.items():
            if mode == ref:
                continue
            a, b = r["test_best"], rows[ref]["test_best"]
            pooled = math.sqrt((a["std"] ** 2 + b["std"] ** 2) / 2)
            diff = a["mean"] - b["mean"]
            spread = f" = {diff / pooled:+.1f} pooled std" if pooled > 0 else " (one seed: no spread to compare with)"
            lines.append(f"* {mode} - {ref}: {diff:+.2f} points (test, best-val checkpoint){spread}")
    return "\n".join(lines)


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
    ax.set_ylabel("test top-1 (%), checkpoint chosen on validation")
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


def plot_dynamics(root: Path, modes: Sequence[str], seeds: int | Sequence[int], path: Path) -> Path | None:
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

    fig, axes = plt.subplots(len(rows), 3, figsize=(14, 2.8 * len(rows)), squeeze=False)
    for (mode, histories), (acc_ax, loss_ax, agree_ax) in zip(rows, axes):
        keys = [k for k in histories[0][0] if k.startswith("val/acc1/") and not k.endswith("ensemble")]
        for i, key in enumerate(keys):
            head = key.removeprefix("val/acc1/")
            train_key = "train/acc1" if head == "main" else f"train/acc1/{head}"
            acc_ax.plot(*_mean_series(histories, key), color=f"C{i}", label=f"{head} val")
            acc_ax.plot(*_mean_series(histories, train_key), color=f"C{i}", linestyle="--", label=f"{head} train")
        for i, key in enumerate(k for k in histories[0][0] if k.startswith("train/ce/") or k == "train/kl"):
            loss_ax.plot(*_mean_series(histories, key), color=f"C{i}", label=key.removeprefix("train/"))
        if "val/agree" in histories[0][0]:
            agree_ax.plot(*_mean_series(histories, "val/agree"), color="C0")
        else:
            note = "one head" if len(keys) == 1 else "not recorded by this run"
            agree_ax.text(0.5, 0.5, note, ha="center", va="center", transform=agree_ax.transAxes)
        acc_ax.set_ylabel(f"{mode}\ntop-1 (%)")
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
