"""Helpers of benchmarks/gpu.sh: a small subset of an image-folder tree (its tiny mode), the epoch plan of the
accuracy runs from the measured epoch times, and the report (GPU.md, gpu.json, compare.png, logs.tgz).

    python3 benchmarks/gpu_report.py subset SRC DST TRAIN_PER_CLASS TEST_PER_CLASS
    python3 benchmarks/gpu_report.py plan WORK BUDGET_S FIXED_EPOCHS JOBS MODES SEEDS
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
MIN_EPOCHS = 120  # the floor: a shorter schedule is not the paper's budget
PLAIN = frozenset({"ce", "ls"})  # the plain backbone; every other mode of the table trains the paper's branches
STARTUP_S = 60  # decoding and CUDA-graph capture in every accuracy process
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


def _rates(work: Path, runs: int) -> tuple[float, float, int, str]:
    """(branched-run epochs per second of the whole GPU, a plain epoch's cost in branched epochs, runs side by
    side, where the figures come from) for ``runs`` runs: the probe's fastest level of at most ``runs`` runs (its
    smallest level where all are larger), else one run at a time at the engine phase's measured epoch time."""
    probe = work / "probe.json"
    if probe.is_file():
        levels = {int(n): v for n, v in json.loads(probe.read_text())["levels"].items()}
        fitting = [n for n in levels if n <= runs] or [min(levels)]
        n = max(fitting, key=lambda k: levels[k]["branched_epochs_per_s"])
        level = levels[n]
        rate, cost = level["branched_epochs_per_s"], level["plain_cost"]
        return rate, cost, n, f"probe: {n} runs side by side train {rate:.3f} branched-run epochs/s"
    runs_ = [_metrics(work / f"engine-{name}") for name in ("graph", "compiled", "eager")]  # the path used
    epoch_s = next((r[-1]["time_s"] for r in runs_ if r), None)
    if epoch_s is None:
        return 0.0, 0.5, 1, "no probe and no measured epoch"
    return 1.0 / epoch_s, 0.5, 1, f"no probe: one run at a time, a DHM epoch of {epoch_s:.2f} s"


def plan(work: str, budget_s: float, fixed_epochs: int, jobs: int, modes: str, seeds: str) -> dict:
    """The accuracy runs' schedule, written to WORK/plan.json: the paper's 164 epochs if every run (``modes`` x
    ``seeds``) fits ``budget_s``, else the most that fit, at least MIN_EPOCHS, the same for all; where not even that
    fits, as many whole seeds as do (at MIN_EPOCHS; the rest are named for a later run with ACC_EPOCHS fixed). Runs
    side by side: the probe's fastest level (``jobs`` without a probe); milestones at 81/164 and 122/164."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from dhm.compare import seed_list

    work, names, seeds_ = Path(work), modes.split(","), seed_list(seeds)
    plain = sum(1 for m in names if m in PLAIN)
    branched = len(names) - plain
    shortest = fixed_epochs if fixed_epochs > 0 else MIN_EPOCHS
    for k in range(len(seeds_), 0, -1):  # the most whole seeds that fit at the shortest allowed schedule
        rate, cost, level, source = _rates(work, k * len(names))
        if rate <= 0:  # nothing measured: every seed, and the time limit stops what does not fit
            k, level, per_epoch_s = len(seeds_), jobs, math.inf
            break
        per_epoch_s = k * (branched + cost * plain) / rate
        if STARTUP_S + shortest * per_epoch_s <= budget_s:
            break
    fit = math.floor((budget_s - STARTUP_S) / per_epoch_s) if per_epoch_s < math.inf else 0
    epochs = fixed_epochs if fixed_epochs > 0 else max(MIN_EPOCHS, min(PAPER_EPOCHS, fit))
    now, later = seeds_[:k], seeds_[k:]
    note = (
        f"{source}; {len(now) * len(names)} runs ({len(now)} seed(s) x {len(names)} modes) predicted at "
        f"{per_epoch_s:.2f} s per epoch of all of them; {fit} epochs fit {budget_s:.0f} s"
        + (f"; fixed at {fixed_epochs}" if fixed_epochs > 0 else "")
        + (f"; seeds {later} do not fit: a later run with ACC_EPOCHS={epochs}" if later else "")
    )
    milestones = [round(epochs * m / PAPER_EPOCHS) for m in PAPER_MILESTONES]
    result = {
        "epochs": epochs,
        "milestones": milestones,
        "seeds": now,
        "seeds_left": later,
        "budget_s": budget_s,
        "jobs": max(1, min(level if (work / "probe.json").is_file() else jobs, len(now) * len(names))),
        "modes": names,
        "note": note,
    }
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
    plan_, probe, reid = (
        json.loads((work / name).read_text()) if (work / name).is_file() else None
        for name in ("plan.json", "probe.json", "reid-speed.json")
    )
    lines = ["# GPU run of benchmarks/gpu.sh", "", "```", env.strip(), "```", ""]

    train_rows = [r for r in speed if r["suite"] == "speed"]
    if train_rows:
        lines += [
            "## Training steps (synthetic data on the device, bf16 autocast, channels_last)",
            "",
            "| model | batch | mode | compiled | images/s | ms/step | GFLOP/step | TFLOP/s | of dense bf16 peak "
            "| peak memory (MB) |",
            "|---|---:|---|---|---:|---:|---:|---:|---:|---:|",
        ]
        for r in train_rows:
            frac = r.get("peak_bf16_fraction")
            lines.append(
                f"| {r['model']} | {r['batch']} | {r['mode']} | {r.get('compile', False)} | "
                f"{_fmt(r['images_per_s'], 0)} | "
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

    if probe:
        lines += [
            f"## Runs side by side (benchmarks/gpu_probe.py, {probe['epochs']} epochs each)",
            "",
            "| runs at once | branched-run epochs/s of the GPU | a plain epoch costs | measured while all ran "
            "| wall (s) |",
            "|---:|---:|---:|---|---:|",
        ]
        for n, level in probe["levels"].items():
            lines.append(
                f"| {n} | {level['branched_epochs_per_s']:.3f} | {level['plain_cost']:.2f} | {level['overlap']} "
                f"| {level['wall_s']:.0f} |"
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
    if reid:
        lines += [f"## Re-ID training steps ({reid['recipe']}, batch {reid['batch']}, synthetic identity batches)", ""]
        lines += [
            "| method | images/s | s per step | parameters trained (M) | cost vs first |",
            "|---|---:|---:|---:|---:|",
        ]
        lines += [
            f"| {r['method']} | {r['images_per_s']:,.0f} | {r['s_per_step']:.4f} | {r['params_trained_m']:.1f} "
            f"| {r['cost_vs_first']:.2f}x |"
            for r in reid["rows"]
        ]
        lines.append("")
    (out / "GPU.md").write_text("\n".join(lines) + "\n")
    raw = {
        "env": env,
        "speed": speed,
        "pipeline": pipeline,
        "probe": probe,
        "plan": plan_,
        "accuracy": acc,
        "reid_speed": reid,
    }
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
        plan(args[0], float(args[1]), int(args[2]), int(args[3]), args[4], args[5])
    elif command == "report":
        report(args[0], args[1])
    else:
        sys.exit(f"unknown command {command!r}")
