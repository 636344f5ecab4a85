"""The re-ID accuracy table of RESULTS.md from the runs of benchmarks/pku_reid.sh: for every method, mean +- std
over identity splits x seeds of the deployed (main) head's test mAP and rank-1 (checkpoint chosen on validation,
and the last epoch), every head and the concatenation, and each method's paired difference to ``bot`` on the same
split and seed. Reads ``ROOT/split<k>/<method>/seed<s>/summary.json``; lists unfinished runs.

    python benchmarks/reid_table.py runs/compare/pku-reid --out benchmarks/results/cpu_pku_reid
"""

from __future__ import annotations

import argparse
import json
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


def markdown(rows: dict) -> str:
    lines = [
        (
            "| method | runs | mAP (best val) | rank-1 (best val) | mAP (last) | rank-1 (last) | "
            "paired d mAP vs BoT (best val) | paired d mAP (last) | paired d rank-1 (best val) | s/run |"
        ),
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for method, r in rows.items():
        lines.append(
            f"| {method} | {r['n']} | {_ms(r['mAP'])} | {_ms(r['rank1'])} | {_ms(r['mAP_last'])} | "
            f"{_ms(r['rank1_last'])} | {_ms(r['d_mAP'])} | {_ms(r['d_mAP_last'])} | {_ms(r['d_rank1'])} | "
            f"{statistics.mean(r['wall_s']):.0f} |"
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
    args = parser.parse_args(argv)
    rows = table(collect(args.root), args.methods.split(","), args.baseline)
    text = markdown(rows)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".json").write_text(json.dumps(rows, indent=1))
        args.out.with_suffix(".md").write_text(text + "\n")


if __name__ == "__main__":
    main()
