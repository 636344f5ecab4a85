"""Helpers of benchmarks/gpu.sh: a small subset of an image-folder tree (its tiny mode), the epoch plan of the
accuracy runs from the measured epoch times, and the report (GPU.md, gpu.json, compare.png, logs.tgz).

    python3 benchmarks/gpu_report.py subset SRC DST TRAIN_PER_CLASS TEST_PER_CLASS
    python3 benchmarks/gpu_report.py plan WORK BUDGET_S FIXED_EPOCHS JOBS
    python3 benchmarks/gpu_report.py report WORK OUT
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import tarfile
from pathlib import Path

PAPER_EPOCHS, PAPER_MILESTONES = 164, (81, 122)
MIN_EPOCHS = 60
MODES_WITH_BRANCHES, PLAIN_MODES = 3, 2  # dsl, dhm, dhm-rampup; ce, ls
OVERLAP = 0.8  # assumed wall time of side-by-side runs relative to running them one after the other
STARTUP_S = 60  # decoding and compilation in every accuracy process
ENGINE_RUNS = ("eager", "compiled", "graph", "graph-compiled")  # engine-<name> run folders of gpu.sh


def subset(src: str, dst: str, train_per_class: int, test_per_class: int) -> None:
    """Copy the first N images of every class of ``src/train`` and ``src/test`` to ``dst``; ``src`` may be the
    tarball itself (read in one pass, nothing else extracted)."""
    counts = {"train": train_per_class, "test": test_per_class}
    if Path(src).is_file():
        taken: dict[tuple[str, str], int] = {}
        with tarfile.open(src) as tar:
            for member in tar:
                parts = Path(member.name).parts  # CIFAR-10-images/<split>/<class>/<file>
                if not member.isfile() or len(parts) != 4 or parts[1] not in counts:
                    continue
                key = (parts[1], parts[2])
                if taken.get(key, 0) < counts[parts[1]]:
                    taken[key] = taken.get(key, 0) + 1
                    target = Path(dst) / parts[1] / parts[2] / parts[3]
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(tar.extractfile(member).read())
        return
    for split, count in counts.items():
        for folder in sorted(p for p in (Path(src) / split).iterdir() if p.is_dir()):
            target = Path(dst) / split / folder.name
            target.mkdir(parents=True, exist_ok=True)
            for path in sorted(folder.iterdir())[:count]:
                shutil.copy(path, target / path.name)


def _metrics(run: Path) -> list[dict]:
    path = run / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def _speed_rows(work: Path) -> list[dict]:
    rows = []
    for path in sorted(work.glob("speed-*.json")):
        result = json.loads(path.read_text())
        for row in result["rows"]:
            rows.append({**row, "model": result["model"], "gpu": result["environment"].get("gpu", "cpu")})
    return rows


def plan(work: str, budget_s: float, fixed_epochs: int, jobs: int) -> dict:
    """Epochs for the accuracy runs: the paper's 164 if they fit ``budget_s``, else the most that fit (at least 60),
    with the paper's milestones scaled (81/164 and 122/164 of the run). Written to WORK/plan.json."""
    work = Path(work)
    note = f"fixed at {fixed_epochs}"
    epochs = fixed_epochs
    if epochs <= 0:
        runs = [_metrics(work / f"engine-{name}") for name in ("graph", "compiled", "eager")]  # the path used
        epoch_s = next((r[-1]["time_s"] for r in runs if r), None)
        speed = {
            r["mode"]: r["ms_per_step"]
            for r in _speed_rows(work)
            if r["suite"] == "speed" and r["model"] == "cifar_resnet32"
        }
        plain_ratio = speed["ce"] / speed["dhm"] if {"ce", "dhm"} <= speed.keys() else 0.5
        if epoch_s is None:
            epochs, note = MIN_EPOCHS, "no measured epoch time: the minimum"
        else:
            serial = MODES_WITH_BRANCHES * epoch_s + PLAIN_MODES * epoch_s * plain_ratio
            wall = serial * (OVERLAP if jobs >= MODES_WITH_BRANCHES + PLAIN_MODES else 1.0)
            fit = math.floor((budget_s - STARTUP_S) / wall)
            epochs = max(MIN_EPOCHS, min(PAPER_EPOCHS, fit))
            note = (
                f"measured DHM epoch {epoch_s:.2f} s (exclusive), plain/DHM step ratio {plain_ratio:.2f}, predicted "
                f"{wall:.2f} s per epoch of all 5 modes side by side; {fit} epochs fit {budget_s:.0f} s"
            )
    milestones = [round(epochs * m / PAPER_EPOCHS) for m in PAPER_MILESTONES]
    result = {"epochs": epochs, "milestones": milestones, "budget_s": budget_s, "jobs": jobs, "note": note}
    (work / "plan.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result))
    return result


def _fmt(value, digits=1) -> str:
    if value is None or value == "":
        return ""
    return f"{value:,.{digits}f}" if isinstance(value, float) else str(value)


def report(work: str, out: str) -> None:
    """GPU.md (every table), gpu.json (the raw figures), compare.png and logs.tgz into ``out``."""
    work, out = Path(work), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    env = (work / "env.txt").read_text() if (work / "env.txt").is_file() else ""
    speed = _speed_rows(work)
    engines = {name: _metrics(work / f"engine-{name}") for name in ENGINE_RUNS}
    conventional = (
        json.loads((work / "conventional.json").read_text()) if (work / "conventional.json").is_file() else None
    )
    accuracy = work / "accuracy" / "compare.json"
    acc = json.loads(accuracy.read_text()) if accuracy.is_file() else None
    plan_ = json.loads((work / "plan.json").read_text()) if (work / "plan.json").is_file() else None
    lines = ["# GPU run of benchmarks/gpu.sh", "", "```", env.strip(), "```", ""]

    train_rows = [r for r in speed if r["suite"] == "speed"]
    if train_rows:
        lines += [
            "## Training steps (synthetic data on the device, bf16 autocast, channels_last, eager)",
            "",
            "| model | batch | mode | images/s | ms/step | GFLOP/step | TFLOP/s | of dense bf16 peak | peak memory (MB) |",
            "|---|---:|---|---:|---:|---:|---:|---:|---:|",
        ]
        for r in train_rows:
            frac = r.get("peak_bf16_fraction")
            lines.append(
                f"| {r['model']} | {r['batch']} | {r['mode']} | {_fmt(r['images_per_s'], 0)} | "
                f"{_fmt(r['ms_per_step'], 2)} | {_fmt(r['gflops_per_step'])} | {_fmt(r.get('tflops'), 2)} | "
                f"{'' if frac is None else f'{100 * frac:.1f}%'} | {_fmt(r.get('peak_memory_mb'), 0)} |"
            )
        lines.append("")
    inference = [r for r in speed if r["suite"] == "inference"]
    if inference:
        lines += ["## Inference (eval mode, bf16, channels_last)", "", "| model | batch | what | images/s |"]
        lines += ["|---|---:|---|---:|"]
        lines += [f"| {r['model']} | {r['batch']} | {r['what']} | {_fmt(r['images_per_s'], 0)} |" for r in inference]
        lines.append("")

    pipeline = []
    dhm_step = next((r for r in train_rows if r["model"] == "cifar_resnet32" and r["mode"] == "dhm"), None)
    for name, records in engines.items():
        if records:
            last = records[-1]
            summary = work / f"engine-{name}" / "summary.json"
            train = json.loads(summary.read_text())["config"]["train"] if summary.is_file() else {}
            setting = f"compile={train.get('compile', '?')}, cuda_graph={train.get('cuda_graph', False)}"
            row = {
                "what": f"dhm train, in-memory data on the device, bf16, channels_last, {setting}",
                "images_per_s": last["images_per_s"],
                "epoch_s": 45_000 / last["images_per_s"],
                "epoch_with_val_s": last["time_s"],
                "epoch": last["epoch"],
            }
            if dhm_step and dhm_step.get("peak_bf16_fraction"):  # the same model and loss: same FLOPs per image
                tflops = dhm_step["gflops_per_step"] / dhm_step["batch"] * last["images_per_s"] / 1e3
                row["tflops"] = tflops
                row["peak_bf16_fraction"] = tflops / (dhm_step["tflops"] / dhm_step["peak_bf16_fraction"])
            pipeline.append(row)
    if conventional:
        pipeline.append({"what": conventional["what"], **conventional, "epoch_with_val_s": None, "epoch": None})
    if pipeline:
        base = conventional["images_per_s"] if conventional else None
        lines += [
            "## Training pipeline: CIFAR-10 JPEG, ResNet-32 + DHM (paper branches), batch 128",
            "",
            (
                "| pipeline | train images/s | s per 45,000-image epoch | epoch incl. validation (s) "
                "| vs conventional | TFLOP/s (of bf16 peak) |"
            ),
            "|---|---:|---:|---:|---:|---:|",
        ]
        for p in pipeline:
            ratio = f"{p['images_per_s'] / base:.1f}x" if base else ""
            flops = f"{p['tflops']:.2f} ({100 * p['peak_bf16_fraction']:.1f}%)" if p.get("tflops") else ""
            lines.append(
                f"| {p['what']} | {_fmt(p['images_per_s'], 0)} | {_fmt(p['epoch_s'], 2)} | "
                f"{_fmt(p['epoch_with_val_s'], 2)} | {ratio} | {flops} |"
            )
        lines.append("")

    if plan_:
        lines += [
            f"## Accuracy: {plan_['epochs']} epochs, lr steps at {plan_['milestones']}",
            "",
            f"Plan: {plan_['note']}.",
            "",
        ]
    if acc:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
        from dhm.compare import to_markdown

        lines += [to_markdown(acc), ""]
        png = work / "accuracy" / "compare.png"
        if png.is_file():
            shutil.copy(png, out / "compare.png")
    (out / "GPU.md").write_text("\n".join(lines) + "\n")
    raw = {"env": env, "speed": speed, "pipeline": pipeline, "plan": plan_, "accuracy": acc}
    (out / "gpu.json").write_text(json.dumps(raw, indent=1, default=str))
    with tarfile.open(out / "logs.tgz", "w:gz") as tar:
        for path in sorted(work.rglob("*")):
            if (
                path.is_file()
                and (path.suffix in (".log", ".jsonl", ".json", ".md", ".txt", ".yaml"))
                and ("data" not in path.relative_to(work).parts)
            ):
                tar.add(path, arcname=str(path.relative_to(work)))
    print((out / "GPU.md").read_text())


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    if command == "subset":
        subset(args[0], args[1], int(args[2]), int(args[3]))
    elif command == "plan":
        plan(args[0], float(args[1]), int(args[2]), int(args[3]))
    elif command == "report":
        report(args[0], args[1])
    else:
        sys.exit(f"unknown command {command!r}")
