"""The comparison table: mean +- std over seeds of each mode's selected metric (the run's task names it) on the
report split for the checkpoint chosen on validation and for the last epoch, every head, and the differences
to ``ce``, ``ls`` and ``dsl`` in points and in units of the pooled std."""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..tasks import Task, get_task
from .modes import run_dir, seed_list


def _stats(values: list[float]) -> dict[str, float]:
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": mean, "std": std, "n": len(values), "values": values}


def _recorded(values: list[float]) -> dict[str, float]:
    """Mean +- std of the values a run recorded (a run kept without its metrics file has none: NaN)."""
    return _stats([v for v in values if not math.isnan(v)] or [math.nan])


def cell(stat: dict) -> str:
    """``mean +- std``, or the mean alone for one seed (a spread of one value is no spread)."""
    return f"{stat['mean']:.2f} +- {stat['std']:.2f}" if stat.get("n", 2) > 1 else f"{stat['mean']:.2f}"


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
        task, metric, report = measured(summaries[0])
        vals = [s["val_best"].get(metric) for s in summaries]
        rows[mode] = {
            "test_best": _stats([s[report][metric] for s in summaries]),
            "test_last": _stats([s[f"{report}_last"][metric] for s in summaries]),
            "val_best": _stats([v for v in vals if v is not None] or [math.nan]),
            "train_last": _recorded([_last_train(run_dir(root, mode, s), task.train_metric) for s in done]),
            "wall_time_s": _stats([s["wall_time_s"] for s in summaries]),
            "epochs": summaries[0]["epochs"],
            "test_heads": _head_stats(summaries, task, report),
            "task": task.name,
            "metric": metric,
            "report": report,
            "device": summaries[0].get("device", ""),
        }
    first = next(iter(rows.values()), {})
    task = first.get("task", "classification")
    metric = first.get("metric", get_task(task).primary)
    return {
        "root": str(root),
        "seeds": seed_list(seeds),
        "modes": rows,
        "unfinished": unfinished,
        "task": task,
        "metric": metric,
    }


def measured(summary: dict[str, Any]) -> tuple[Task, str, str]:
    """A run's task, the metric that selected its checkpoint and its first report split (runs written before
    summaries named their task are classification runs selected on its primary metric)."""
    task = get_task(summary.get("task", "classification"))
    select = summary.get("select") or f"{task.select_split}/{task.primary}"
    if "/" not in select:  # "last epoch" (train.select=last): tables report the task's primary metric
        return task, task.primary, task.report_splits[0]
    return task, select.split("/", 1)[1], task.report_splits[0]


def _last_train(directory: Path, metric: str) -> float:
    """The run's training ``metric`` in its last epoch (metrics.jsonl), NaN when not recorded."""
    lines = (directory / "metrics.jsonl").read_text().splitlines() if (directory / "metrics.jsonl").is_file() else []
    return float(json.loads(lines[-1]).get(f"train/{metric}", math.nan)) if lines else math.nan


def _head_stats(summaries: list[dict[str, Any]], task: Task, report: str) -> dict[str, dict[str, float]]:
    """Every head's (and the ensemble's) metric on the report split (best-val checkpoint), mean +- std."""
    prefix = task.head_metric("")
    if prefix is None:
        return {}
    keys = [k for k in summaries[0].get(report, {}) if k.startswith(prefix)]
    return {k.removeprefix(prefix): _stats([s[report][k] for s in summaries]) for k in keys}


def _progress(directory: Path) -> dict[str, Any]:
    """Epochs done and the latest selection score of an unfinished run (from its metrics file)."""
    metrics = directory / "metrics.jsonl"
    if not metrics.is_file():
        return {"epochs_done": 0}
    lines = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    if not lines:
        return {"epochs_done": 0}
    last = lines[-1]
    task = get_task(_run_task(directory))
    return {"epochs_done": last["epoch"], "val": last.get(f"{task.select_split}/{task.primary}")}


def to_markdown(result: dict[str, Any]) -> str:
    """The comparison table, every head where modes have several, and each mode's difference to ``ce``, ``ls`` and
    ``dsl`` in points and in units of the pooled std."""
    rows = result["modes"]
    first = next(iter(rows.values()), {})
    task = get_task(first.get("task", "classification"))
    what, unit = task.labels.get(first.get("metric", task.primary), (first.get("metric", task.primary), ""))
    report = first.get("report", task.report_splits[0])
    lines = [
        f"| mode | n | {report} {what}, best-val ckpt{unit} | {report} {what}, last epoch{unit} "
        f"| best val {what}{unit} | train {what}, last epoch{unit} | time/run (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for mode, r in rows.items():
        keys = ("test_best", "test_last", "val_best", "train_last")
        cells = [cell(r[k]) if k in r else "-" for k in keys]
        if "train_last" in r and r["train_last"]["n"] < r["test_best"]["n"]:  # runs kept without metrics files
            cells[-1] += f" (n={r['train_last']['n']})" if not math.isnan(r["train_last"]["mean"]) else ""
        lines.append(
            f"| {mode} | {r['test_best']['n']} | " + " | ".join(cells) + f" | {r['wall_time_s']['mean']:.0f} |"
        )
    lines.append("")
    heads = [m for m, r in rows.items() if len(r.get("test_heads", {})) > 1]
    if heads:
        columns = head_columns([rows[m]["test_heads"] for m in heads])
        lines += [
            f"Every head and their ensemble ({report} {what} of the best-val checkpoint{unit}; - where a method has no "
            "such head):",
            "",
            "| mode | " + " | ".join(columns) + " |",
            "|---|" + "---|" * len(columns),
        ]
        for mode in heads:
            stats = rows[mode]["test_heads"]
            lines.append(f"| {mode} | " + " | ".join(cell(stats[c]) if c in stats else "-" for c in columns) + " |")
        lines.append("")
    for name, p in result.get("unfinished", {}).items():
        lines.append(
            f"* unfinished: {name}, {p['epochs_done']} epochs done"
            + (f", validation {p['val']:.2f}" if p.get("val") is not None else "")
        )
    if lines[-1]:
        lines.append("")
    lines += _differences(rows, report)
    return "\n".join(lines)


def head_columns(heads: Sequence[dict[str, Any]]) -> list[str]:
    """The union of several modes' head names, so that every mode's cells fall in the right column: ``main``, the
    branches ``head1, head2, ...`` by number, other heads in order of appearance (ONE's ``gate``), ``ensemble``."""

    def rank(name: str) -> tuple[int, int]:
        if name == "main":
            return 0, 0
        if name.startswith("head") and name[4:].isdigit():
            return 1, int(name[4:])
        return (3, 0) if name == "ensemble" else (2, 0)

    return sorted(dict.fromkeys(name for h in heads for name in h), key=rank)


REFERENCES = ("ce", "ls", "dsl")  # plain training, label smoothing, deep supervision: what a method must beat


def _differences(rows: dict[str, Any], report: str) -> list[str]:
    """Each mode's difference to every reference in the table, in points and in units of the pooled std."""
    refs = [r for r in REFERENCES if r in rows]
    if not refs or len(rows) < 2:
        return []
    lines = [
        f"Difference of the deployed head to {', '.join(refs)} ({report}, best-val checkpoint; points, and in units of "
        "the pooled std where there are seeds to pool):",
        "",
        "| mode | " + " | ".join(f"- {r}" for r in refs) + " |",
        "|---|" + "---|" * len(refs),
    ]
    for mode, r in rows.items():
        cells = []
        for ref in refs:
            a, b = r["test_best"], rows[ref]["test_best"]
            pooled = math.sqrt((a["std"] ** 2 + b["std"] ** 2) / 2)
            diff = a["mean"] - b["mean"]
            cells.append("" if mode == ref else f"{diff:+.2f}" + (f" ({diff / pooled:+.1f} sd)" if pooled > 0 else ""))
        lines.append(f"| {mode} | " + " | ".join(cells) + " |")
    return lines


def _run_task(directory: Path) -> str:
    """The task of a run directory's config (classification when not recorded)."""
    import yaml

    config = directory / "config.yaml"
    data = yaml.safe_load(config.read_text()) if config.is_file() else {}
    return ((data or {}).get("train") or {}).get("task", "classification")
