"""The re-ID accuracy table of RESULTS.md from the runs of benchmarks/pku_reid.sh: for every method, mean +- std
over identity splits x seeds of the deployed (main) head's test mAP and rank-1 (checkpoint chosen on validation,
and the last epoch), every head and the concatenation, and each method's paired difference to ``bot`` on the same
split and seed. Reads ``ROOT/split<k>/<method>/seed<s>/summary.json``; lists unfinished runs.

    python benchmarks/reid_table.py runs/compare/pku-reid --out benchmarks/results/cpu_pku_reid
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
from pathlib import Path


def _ms(values: list[float]) -> str:
    if not values:
        return "-"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.2f} +- {sd:.2f}"


def collect(root: Path) -> dict[str, dict[tuple[int, int], dict]]:
    """method -> (split, seed) -> summary of every finished run under ``root``."""
    runs: dict[str, dict[tuple[int, int], dict]] = {}
    for path in sorted(root.glob("split*/*/seed*/summary.json")):
        split = int(path.parts[-4].removeprefix("split"))
        seed = int(path.parts[-2].removeprefix("seed"))
        runs.setdefault(path.parts[-3], {})[(split, seed)] = json.loads(path.read_text())
    return runs


def table(runs: dict[str, dict[tuple[int, int], dict]], order: list[str], baseline: str = "ce") -> dict:
    """Per method: n, mAP / rank-1 of the main head (best-val checkpoint and last epoch), per-head mAP, paired
    differences to ``baseline``, wall time."""
    out = {}
    base = runs.get(baseline, {})
    for method in [m for m in order if m in runs]:
        done = runs[method]
        heads = sorted({k.split("/")[1] for s in done.values() for k in s["test"] if k.startswith("mAP/")})
        row = {
            "n": len(done),
            "mAP": [s["test"]["mAP/main"] for s in done.values()],
            "rank1": [s["test"]["rank1/main"] for s in done.values()],
            "mAP_last": [s["test_last"]["mAP/main"] for s in done.values()],
            "rank1_last": [s["test_last"]["rank1/main"] for s in done.values()],
            "heads": {h: [s["test"][f"mAP/{h}"] for s in done.values() if f"mAP/{h}" in s["test"]] for h in heads},
            "wall_s": [s["wall_time_s"] for s in done.values()],
            "val_mAP": [s["best_val_mAP"] for s in done.values() if s.get("best_val_mAP") is not None],
        }
        pairs = [key for key in done if key in base]
        for metric, part, key in (
            ("mAP", "test", "mAP/main"),
            ("rank1", "test", "rank1/main"),
            ("mAP_last", "test_last", "mAP/main"),
        ):
            row[f"d_{metric}"] = [done[k][part][key] - base[k][part][key] for k in pairs]
        out[method] = row
    return out


def split_differences(done: dict, base: dict, part: str, key: str) -> dict[int, float]:
    """Per identity split, ``done - base`` of ``part[key]`` averaged over the seeds both have (the split is the unit
    of replication: its two seeds share the test identities)."""
    out: dict[int, list[float]] = {}
    for (split, seed), summary in done.items():
        other = base.get((split, seed), {}).get(part, {})
        if key in summary.get(part, {}) and key in other:
            out.setdefault(split, []).append(summary[part][key] - other[key])
    return {split: statistics.mean(v) for split, v in sorted(out.items())}


def paired_interval(diffs: list[float], reps: int = 10_000, seed: int = 0) -> dict:
    """Mean paired difference, its standard error, t = mean / SE, and a 95% percentile bootstrap interval of the
    mean over splits (``reps`` resamples of the splits with replacement, seeded)."""
    n = len(diffs)
    if n < 2:
        return {"n": n, "mean": diffs[0] if diffs else None}
    mean, se = statistics.mean(diffs), statistics.stdev(diffs) / n**0.5
    rng = random.Random(seed)
    means = sorted(statistics.fmean(rng.choices(diffs, k=n)) for _ in range(reps))
    return {"n": n, "mean": mean, "se": se, "t": mean / se if se else None,
            "ci95": [means[int(0.025 * reps)], means[int(0.975 * reps) - 1]]}  # fmt: skip


def paired_table(runs: dict, order: list[str], against: dict[str, str]) -> dict:
    """For each method with a partner in ``against``: the per-split paired differences of the main head's test
    mAP and rank-1 (best-validation checkpoint and last epoch) and their intervals."""
    out = {}
    for method in order:
        partner = against.get(method)
        if partner is None or method not in runs or partner not in runs:
            continue
        row = {"against": partner}
        for label, part, key in (
            ("mAP_last", "test_last", "mAP/main"),
            ("rank1_last", "test_last", "rank1/main"),
            ("mAP_best", "test", "mAP/main"),
            ("rank1_best", "test", "rank1/main"),
        ):
            diffs = split_differences(runs[method], runs[partner], part, key)
            row[label] = {"splits": diffs, **paired_interval(list(diffs.values()))}
        out[method] = row
    return out


def _ci(cell: dict) -> str:
    if cell.get("se") is None:
        return "-" if cell.get("mean") is None else f"{cell['mean']:+.2f} (one split)"
    lo, hi = cell["ci95"]
    t = "no spread" if cell["t"] is None else f"{cell['t']:+.1f} SE"
    return f"{cell['mean']:+.2f} [{lo:+.2f}, {hi:+.2f}], {t}"


def paired_markdown(rows: dict, labels: dict[str, str]) -> str:
    """The paired differences: mean over splits [95% bootstrap interval], and the mean in standard errors."""
    lines = [
        "| method | against | splits | d mAP (last) | d rank-1 (last) | d mAP (best val) | d rank-1 (best val) |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for method, r in rows.items():
        lines.append(
            f"| {labels.get(method, method)} | {labels.get(r['against'], r['against'])} | {r['mAP_last']['n']} | "
            + " | ".join(_ci(r[k]) for k in ("mAP_last", "rank1_last", "mAP_best", "rank1_best"))
            + " |"
        )
    return "\n".join(lines)


def markdown(rows: dict) -> str:
    lines = [
        (
            "| method | runs | mAP (best val) | rank-1 (best val) | mAP (last) | rank-1 (last) | "
            "paired d mAP vs BoT (best val) | paired d mAP (last) | paired d rank-1 (best val) | best val mAP | s/run |"
        ),
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for method, r in rows.items():
        lines.append(
            f"| {method} | {r['n']} | {_ms(r['mAP'])} | {_ms(r['rank1'])} | {_ms(r['mAP_last'])} | "
            f"{_ms(r['rank1_last'])} | {_ms(r['d_mAP'])} | {_ms(r['d_mAP_last'])} | {_ms(r['d_rank1'])} | "
            f"{_ms(r['val_mAP'])} | {statistics.mean(r['wall_s']):.0f} |"
        )
    lines += [
        "",
        "| method | " + " | ".join(f"mAP {h}" for h in ("main", "head1", "head2", "concat")) + " |",
        "|---|---:|---:|---:|---:|",
    ]
    for method, r in rows.items():
        lines.append(
            f"| {method} | "
            + " | ".join(_ms(r["heads"].get(h, [])) for h in ("main", "head1", "head2", "concat"))
            + " |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--methods", default="ce,dsl,dhm,dhm-gentle,dhm-emb")
    parser.add_argument("--baseline", default="ce", help="the mode every other is paired with (BoT alone)")
    parser.add_argument("--out", type=Path, default=None, help="write OUT.json and OUT.md")
    parser.add_argument(
        "--ladder", action="store_true", help="pair each method with the one before it in --methods (BoT's ladder)"
    )
    parser.add_argument("--labels", default="", help="'label=mode;label=mode...': names for long modes")
    args = parser.parse_args(argv)
    runs, order = collect(args.root), args.methods.split(",")
    labels = {mode: label for label, mode in (item.split("=", 1) for item in args.labels.split(";") if item)}
    rows = table(runs, order, args.baseline)
    against = dict(zip(order[1:], order)) if args.ladder else {m: args.baseline for m in order if m != args.baseline}
    paired = paired_table(runs, order, against)
    text = markdown(rows) + "\n\nPaired differences over identity splits (seeds averaged within a split; mean "
    text += "[95% percentile bootstrap interval over splits, 10,000 resamples], and the mean in standard errors):\n\n"
    text += paired_markdown(paired, labels)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".json").write_text(json.dumps({"runs": rows, "paired": paired}, indent=1))
        args.out.with_suffix(".md").write_text(text + "\n")


if __name__ == "__main__":
    main()
