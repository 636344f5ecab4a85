"""Which checkpoint should a re-ID run keep? Measured on the PKU-Reid subset (RESULTS.md, "Which re-ID checkpoint").

Trains the ``pku-reid`` recipe for every (validation size, identity split, method) with every epoch's checkpoint
kept (``train.keep_every=1``), evaluates each kept checkpoint's deployed head on the test identities, then asks of
every selection rule which epoch it would have kept and what that epoch's test mAP is, against the last epoch's:

* ``last``: the last epoch (no selection);
* ``best``: the epoch of the best validation mAP (ties: the later);
* ``smooth3`` / ``smooth5``: the best trailing mean of validation mAP over 3 / 5 epochs;
* ``late-best``: the best validation mAP among the last quarter of the epochs.

Resumable (finished runs are skipped, evaluated curves are cached in ``curve.json``); ``--tiny`` checks the whole
path in a few seconds. Usage::

    python benchmarks/reid_selection.py --out runs/selection [--val-sizes 6,12] [--splits 5] [--modes ce,dhm]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

DATA = Path(os.environ.get("DHM_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
RULES = ("last", "best", "smooth3", "smooth5", "late-best")


def train(out: Path, val_size: int, split: int, modes: str, extra: list[str]) -> None:
    """One ``dhm compare`` of ``modes`` (one seed) for a validation size and an identity split."""
    cmd = [sys.executable, "-m", "dhm", "compare", "pku-reid", "--seeds", "1", "--modes", modes, "--jobs", "2"]
    # as a fraction of the 37 training identities (a count may hold out at most a quarter; 12 is 32%)
    cmd += ["--out", str(out), f"data.root={DATA / 'pku-reid-subset'}", f"data.val_size={(val_size + 0.01) / 37:.6f}"]
    cmd += [f"data.split_seed={split}", "train.keep_every=1", "train.threads=1", "train.progress=false", *extra]
    subprocess.run(cmd, check=True)


def test_curve(run: Path) -> dict[int, float]:
    """Test mAP (deployed head) of every kept epoch of ``run``, cached in ``run/curve.json``."""
    cache = run / "curve.json"
    if cache.is_file():
        return {int(k): v for k, v in json.loads(cache.read_text()).items()}
    from dhm.config import config_from_dict
    from dhm.engine import dist as D
    from dhm.engine.build import build_data, build_model
    from dhm.engine.evaluate import evaluate
    from dhm.engine.runtime import resolve_runtime
    from dhm.files import load_file, load_state
    from dhm.tasks import get_task

    snaps = sorted(run.glob("epoch*.pt"))
    cfg = config_from_dict(load_file(snaps[0])["config"])
    runtime = resolve_runtime(cfg.train, D.setup("cpu"))
    task = get_task(cfg.train.task)
    data = build_data(cfg, runtime.dist, runtime.channels_last, task)
    model = build_model(cfg, data.num_classes, cfg.model.in_channels or data.bundle.channels)
    curve = {}
    for snap in snaps:
        load_state(model, load_file(snap)["model"], str(snap))
        metrics = evaluate(model, data.splits["test"], runtime.device, runtime.amp, task=task)
        curve[int(snap.stem.removeprefix("epoch"))] = metrics["mAP/main"]
    cache.write_text(json.dumps(curve))
    for snap in snaps:  # the curve is what this study needs; the snapshots are large
        snap.unlink()
    return curve


def val_curve(run: Path) -> dict[int, float]:
    """Validation mAP (main head) per epoch, from the run's metrics.jsonl."""
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return {r["epoch"]: r["val/mAP/main"] for r in records}


def choose(rule: str, val: dict[int, float]) -> int:
    """The epoch ``rule`` keeps, given the validation curve (ties: the later epoch)."""
    epochs = sorted(val)
    if rule == "last":
        return epochs[-1]
    if rule.startswith("smooth"):
        k = min(int(rule.removeprefix("smooth")), len(epochs))
        score = {e: statistics.mean(val[x] for x in epochs if e - k < x <= e) for e in epochs[k - 1 :]}
    elif rule == "late-best":
        score = {e: val[e] for e in epochs[len(epochs) * 3 // 4 :]}
    else:
        score = val
    return max(score, key=lambda e: (score[e], e))


def study(out: Path) -> dict:
    """Every run's chosen epochs and test mAPs per rule, and the summary per (validation size, rule)."""
    rows = []
    for summary in sorted(out.glob("val*/split*/*/seed*/summary.json")):
        run = summary.parent
        test, val = test_curve(run), val_curve(run)
        chosen = {rule: choose(rule, val) for rule in RULES}
        rows.append(
            {
                "run": str(run.relative_to(out)),
                "val_size": int(run.parts[-4].removeprefix("val")),
                "test_mAP": {rule: test[e] for rule, e in chosen.items()},
                "epoch": chosen,
                "oracle": max(test.values()),
            }
        )
    table = {}
    for v in sorted({r["val_size"] for r in rows}):
        group = [r for r in rows if r["val_size"] == v]
        table[v] = {
            rule: {
                "mean": statistics.mean(r["test_mAP"][rule] for r in group),
                "vs_last": statistics.mean(r["test_mAP"][rule] - r["test_mAP"]["last"] for r in group),
                "at_least_last": sum(r["test_mAP"][rule] >= r["test_mAP"]["last"] - 1e-9 for r in group),
                "runs": len(group),
                "epoch": statistics.mean(r["epoch"][rule] for r in group),
            }
            for rule in RULES
        }
        table[v]["oracle"] = {"mean": statistics.mean(r["oracle"] for r in group), "runs": len(group)}
    return {"rows": rows, "table": table}


def markdown(result: dict) -> str:
    lines = [
        "| validation identities | rule | epoch kept (mean) | test mAP (mean) | vs last epoch (mean) | runs at least as "
        "good as last |",
        "|---|---|---|---|---|---|",
    ]
    for v, rules in result["table"].items():
        for rule, s in rules.items():
            if rule == "oracle":
                lines.append(f"| {v} | (oracle: the best test epoch, not a rule) | | {s['mean']:.2f} | | |")
                continue
            lines.append(
                f"| {v} | {rule} | {s['epoch']:.1f} | {s['mean']:.2f} | {s['vs_last']:+.2f} | "
                f"{s['at_least_last']} of {s['runs']} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/selection"))
    parser.add_argument("--val-sizes", default="6,12")
    parser.add_argument("--splits", type=int, default=5)
    parser.add_argument("--modes", default="ce,dhm")
    parser.add_argument("--results", type=Path, help="write RESULTS.json/.md here (e.g. benchmarks/results/...)")
    parser.add_argument("--tiny", action="store_true", help="2 epochs, 1 split, one size: checks the path")
    args = parser.parse_args()
    extra = ["train.epochs=3", "model.widths=[4,8,8]"] if args.tiny else []
    sizes = [6] if args.tiny else [int(v) for v in args.val_sizes.split(",")]
    for v in sizes:
        for split in range(1 if args.tiny else args.splits):
            train(args.out / f"val{v}" / f"split{split}", v, split, args.modes, extra)
    result = study(args.out)
    text = markdown(result)
    print(text)
    if args.results:
        args.results.with_suffix(".json").write_text(json.dumps(result, indent=2))
        args.results.with_suffix(".md").write_text(text)


if __name__ == "__main__":
    main()
