"""Issue 7, item 3: score the sweep of benchmarks/never_hurts.sh and pick the DHM setting that is never worse than
the better of plain training (ce) and deep supervision (dsl) by more than the noise, at both budgets.

Selection reads the VALIDATION accuracy only (``best_val_acc1``, seed 0: the sweep). The noise at a budget is the
larger seed standard deviation of ce and dsl validation accuracy there (3 seeds). A setting qualifies when, at both
budgets, its validation accuracy minus the better baseline's is > -noise; among qualifying settings the one with
the largest worst-budget margin wins. Test accuracy (3 seeds) is tabulated for the baselines and the chosen setting
afterwards, never used to choose.

    python benchmarks/never_hurts_table.py [runs/never-hurts] [--out benchmarks/results/never_hurts]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

BUDGETS = {"short": "10k images, pad-crop + flip, batch 128, 10 epochs", "long": "5k images, flip, batch 64, 30 epochs"}


def _runs(root: Path) -> dict[str, dict[str, dict[int, dict]]]:
    """budget -> mode -> seed -> summary."""
    out: dict[str, dict[str, dict[int, dict]]] = {}
    for path in sorted(root.glob("*/*/seed*/summary.json")):
        budget, mode, seed = path.parts[-4], path.parts[-3], int(path.parts[-2].removeprefix("seed"))
        out.setdefault(budget, {}).setdefault(mode, {})[seed] = json.loads(path.read_text())
    return out


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def _canonical(mode: str, budget_epochs: int) -> str:
    """The sweep names its candidates with the budget's ramp-up length; the same setting at both budgets shares a
    name relative to the run (``half`` of it, or the registered ``dhm-rampup``'s quarter)."""
    half = budget_epochs // 2
    return mode.replace(f"loss.rampup_epochs={half}", "loss.rampup_epochs=<half>")


def analyse(root: Path) -> dict:
    runs = _runs(root)
    table: dict[str, dict] = {}
    for budget, modes in runs.items():
        epochs = next(iter(next(iter(modes.values())).values()))["config"]["train"]["epochs"]
        val0 = {m: s[0]["best_val_acc1"] for m, s in modes.items() if 0 in s}
        noise = max(_mean_std([r["best_val_acc1"] for r in modes[m].values()])[1] for m in ("ce", "dsl") if m in modes)
        best = max(val0.get("ce", 0.0), val0.get("dsl", 0.0))
        table[budget] = {
            "epochs": epochs,
            "noise": noise,
            "baseline_val": best,
            "val_seed0": {_canonical(m, epochs): v for m, v in val0.items()},
            "test": {
                _canonical(m, epochs): {
                    "n": len(s),
                    "val": _mean_std([r["best_val_acc1"] for r in s.values()]),
                    "test": _mean_std([r["test_acc1"] for r in s.values()]),
                    "seeds": sorted(s),
                }
                for m, s in modes.items()
            },
        }
    candidates = sorted({m for b in table.values() for m in b["val_seed0"] if m not in ("ce", "dsl")})
    scored = []
    for c in candidates:  # a setting that fails at one budget is not run at the other (it cannot qualify)
        margins = {b: t["val_seed0"][c] - t["baseline_val"] for b, t in table.items() if c in t["val_seed0"]}
        failed = any(margins[b] <= -table[b]["noise"] for b in margins)
        ok = not failed and len(margins) == len(table)
        worst = min(margins.values())
        scored.append({"setting": c, "margins": margins, "worst": worst, "qualifies": ok})
    scored.sort(key=lambda r: -r["worst"])
    chosen = next((r["setting"] for r in scored if r["qualifies"]), None)
    return {"budgets": table, "candidates": scored, "chosen": chosen}


def to_markdown(result: dict) -> str:
    budgets = list(result["budgets"])
    lines = [
        (
            "Validation accuracy (%), seed 0, and its margin over the better of ce and dsl; noise = larger seed std "
            "of ce and dsl validation accuracy (3 seeds)."
        ),
        "",
        "| setting | " + " | ".join(f"{b}: val | {b}: margin" for b in budgets) + " | qualifies |",
        "|---|" + "---:|---:|" * len(budgets) + "---|",
    ]
    for base in ("ce", "dsl"):
        cells = [f"{result['budgets'][b]['val_seed0'].get(base, float('nan')):.2f} | -" for b in budgets]
        lines.append(f"| {base} | " + " | ".join(cells) + " | baseline |")
    for r in result["candidates"]:
        cells = [
            f"{result['budgets'][b]['val_seed0'][r['setting']]:.2f} | {r['margins'][b]:+.2f}"
            if b in r["margins"]
            else "not run | -"
            for b in budgets
        ]
        lines.append(f"| {r['setting']} | " + " | ".join(cells) + f" | {'yes' if r['qualifies'] else 'no'} |")
    lines.append("")
    lines.append(
        "Noise: "
        + ", ".join(f"{b} {result['budgets'][b]['noise']:.2f}" for b in budgets)
        + f". Chosen: {result['chosen']}"
    )
    lines += ["", "Test accuracy of the best-val checkpoint (%), mean +- std over seeds:", ""]
    lines += ["| budget | setting | n | val | test |", "|---|---|---:|---:|---:|"]
    for b in budgets:
        for m, r in sorted(result["budgets"][b]["test"].items()):
            if r["n"] > 1:
                lines.append(
                    f"| {b} | {m} | {r['n']} | {r['val'][0]:.2f} +- {r['val'][1]:.2f} | "
                    f"{r['test'][0]:.2f} +- {r['test'][1]:.2f} |"
                )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", nargs="?", default="runs/never-hurts")
    parser.add_argument("--out", default="benchmarks/results/never_hurts")
    ns = parser.parse_args()
    result = analyse(Path(ns.root))
    text = to_markdown(result)
    Path(ns.out + ".json").write_text(json.dumps(result, indent=1))
    Path(ns.out + ".md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
