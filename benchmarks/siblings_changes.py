"""What the fidelity changes did to the siblings table (RESULTS.md): every method's former row (dhm's former forms,
benchmarks/results/cpu_siblings.json) beside its row at the authors' defaults (cpu_siblings_faithful.json): test
accuracy of the best-validation checkpoint, mean +- std over seeds, its rank among the methods both tables hold,
the change in points and whether the rank moved.

    python benchmarks/siblings_changes.py --out benchmarks/results/cpu_siblings_changes.md
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
# a faithful mode -> the former table's mode it replaces (the same method; a switch's key moved under loss.options)
FORMER = {
    "dml+data.batch_size=128": "dml",
    "dml+loss.options.peer_update=joint": "dml",
    "cskd+data.batch_size=128+loss.options.partner_forward=shared": (
        "cskd+data.batch_size=128+loss.partner_forward=shared"
    ),
}

# rows that are dhm's variants of a published method, not the method as its authors wrote it
VARIANTS = {
    "dml+loss.options.peer_update=joint": "dhm's former joint DML",
    "dsn": "the CE form the DHM and DKS papers compare against; `dsn-authors` is DSN's own",
    "cskd+data.batch_size=128+loss.options.partner_forward=shared": "anchors and partners in one forward",
}


def _ranks(rows: dict[str, float]) -> dict[str, int]:
    order = sorted(rows, key=lambda m: -rows[m])
    return {m: order.index(m) + 1 for m in rows}


def changes(former: dict, faithful: dict) -> list[dict]:
    """One record per faithful mode: former and new mean, std and n, the difference, and ranks among the modes
    (the former table ranked over its own modes, the faithful table over its own)."""
    old = {m: r["test_best"] for m, r in former["modes"].items()}
    new = {m: r["test_best"] for m, r in faithful["modes"].items()}
    old_rank = _ranks({m: s["mean"] for m, s in old.items()})
    new_rank = _ranks({m: s["mean"] for m, s in new.items()})
    out = []
    for mode, stat in new.items():
        was = FORMER.get(mode, mode)
        record = {"mode": mode, "former_mode": was if was in old else None, "new": stat, "new_rank": new_rank[mode]}
        if was in old:
            record.update(former=old[was], former_rank=old_rank[was], change=stat["mean"] - old[was]["mean"])
        out.append(record)
    return out


def _cell(stat: dict) -> str:
    return f"{stat['mean']:.2f} +- {stat['std']:.2f} (n={stat['n']})" if stat["n"] > 1 else f"{stat['mean']:.2f} (n=1)"


def to_markdown(records: list[dict], n_former: int, n_new: int) -> str:
    lines = [
        f"| mode | former row (rank of {n_former}) | at the authors' defaults (rank of {n_new}) | change (points) |",
        "|---|---|---|---:|",
    ]
    for r in records:
        former = f"{_cell(r['former'])}, #{r['former_rank']}" if r["former_mode"] else "- (new)"
        if r["former_mode"] and r["former_mode"] != r["mode"]:
            former += f" (`{r['former_mode']}`)"
        change = f"{r['change']:+.2f}" if r["former_mode"] else "-"
        mode = f"{r['mode']} (dhm variant: {VARIANTS[r['mode']]})" if r["mode"] in VARIANTS else r["mode"]
        lines.append(f"| {mode} | {former} | {_cell(r['new'])}, #{r['new_rank']} | {change} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--former", type=Path, default=RESULTS / "cpu_siblings.json")
    parser.add_argument("--faithful", type=Path, default=RESULTS / "cpu_siblings_faithful.json")
    parser.add_argument("--out", type=Path, help="write the table here (.md) and the records beside it (.json)")
    args = parser.parse_args(argv)
    former, faithful = (json.loads(p.read_text()) for p in (args.former, args.faithful))
    records = changes(former, faithful)
    text = to_markdown(records, len(former["modes"]), len(faithful["modes"]))
    print(text, end="")
    if args.out:
        args.out.write_text(text)
        args.out.with_suffix(".json").write_text(json.dumps(records, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
