"""Every method's golden run: a deterministic smoke run per method (classification methods on the ``smoke``
recipe, the re-ID ones on ``pku-reid`` with the PKU subset), its metrics.jsonl kept under
benchmarks/results/golden/methods/<name>.jsonl, so that a refactoring can show that every method still trains the
same numbers.

    python benchmarks/golden_methods.py --write DIR     # train every run, write DIR/<name>.jsonl
    python benchmarks/golden_methods.py --check DIR [--fresh NEW]   # train every run, compare with DIR/<name>.jsonl
    python benchmarks/golden_methods.py --table A B     # compare two folders of files without training

A run's name is what it trains; its command is in RUNS (a method renamed by a refactoring keeps its name here
with the new spelling of the same run). Values are compared within 1e-6 (timing keys excepted); a key present on
one side only is listed. Exit 0 when everything matches, 1 otherwise. CPU and thread count change floating-point
results: compare files written on the same machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKU = Path(os.environ.get("DHM_SHARED_DATA", ROOT.parent / "shared" / "data")) / "pku-reid-subset"
COMMON = [
    "train.amp=off",
    "train.channels_last=false",
    "train.compile=false",
    "train.threads=1",
    "train.deterministic=true",
    "train.progress=false",
    "train.epochs=2",
    "train.limit_batches=5",
]
SMOKE = ["smoke", "data.options.train_size=512", "data.options.test_size=128", "data.val_size=64"]
REID = ["pku-reid", f"data.root={PKU}", "data.options.test_ids=12", "data.val_size=4", "model.widths=[8,8,16]"]
CLASSIFICATION = [
    "ce", "ls", "dsl", "dhm", "dhm-released", "dhm-bernoulli", "dhm-fork", "dhm-rampup", "dhm-gentle",
    "dsn", "dks", "dml", "one", "okddip", "byot", "cskd", "pskd",
]  # fmt: skip
# name -> the command's arguments after `dhm train`
RUNS: dict[str, list[str]] = {name: [*SMOKE, f"loss.mode={name}"] for name in CLASSIFICATION}
RUNS["dml-alternating"] = [*SMOKE, "loss.mode=dml", "loss.options.peer_update=alternating"]
RUNS["dhm-t3"] = [*SMOKE, "loss.mode=dhm", "loss.temperature=3", "loss.alpha=0.5"]
# the re-ID runs keep the names of the bot-* methods they were before the retrieval task supplied BoT's supervision
for name, method in (("bot", "ce"), ("bot-dsl", "dsl"), ("bot-dhm", "dhm"), ("bot-dhm-gentle", "dhm-gentle")):
    RUNS[name] = [*REID, f"loss.mode={method}"]
RUNS["bot-dhm-emb"] = [*REID, "loss.mode=dhm-emb"]
RUNS["bot-center"] = [*REID, "loss.mode=ce", "loss.supervision.center_weight=0.0005"]
TIMING = {"images_per_s", "time_s"}


def train(name: str, out: Path) -> list[dict]:
    """Train run ``name`` into ``out`` and return its metrics records."""
    args = [sys.executable, "-m", "dhm", "train", *RUNS[name], *COMMON, f"train.out_dir={out}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(args, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{name}: `{' '.join(args[2:])}` failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def compare(a: list[dict], b: list[dict]) -> tuple[float, list[str]]:
    """The largest difference of shared numeric values and the problems found (keys, lengths, values)."""
    problems, worst = [], 0.0
    if len(a) != len(b):
        problems.append(f"{len(a)} epochs against {len(b)}")
    for epoch, (x, y) in enumerate(zip(a, b), 1):
        only = sorted(set(x) ^ set(y))
        if only:
            problems.append(f"epoch {epoch}: keys on one side only: {only}")
        for key in x:
            if key in y and key not in TIMING and isinstance(x[key], (int, float)) and x[key] is not None:
                if y[key] is None:
                    problems.append(f"epoch {epoch} {key}: {x[key]} against None")
                    continue
                diff = abs(float(x[key]) - float(y[key]))
                worst = max(worst, diff)
                if diff > 1e-6:
                    problems.append(f"epoch {epoch} {key}: {x[key]} against {y[key]}")
    return worst, problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", metavar="DIR")
    mode.add_argument("--check", metavar="DIR")
    mode.add_argument("--table", nargs=2, metavar=("BEFORE", "AFTER"))
    parser.add_argument("--only", default="", help="comma-separated run names (default: all)")
    parser.add_argument("--fresh", default="", help="with --check: keep the new runs' files in this folder")
    args = parser.parse_args()
    names = [n for n in args.only.split(",") if n] or list(RUNS)
    if args.table:
        return report({n: (Path(args.table[0]) / f"{n}.jsonl", Path(args.table[1]) / f"{n}.jsonl") for n in names})
    folder = Path(args.write or args.check)
    fresh = Path(args.fresh) if args.fresh else None
    with tempfile.TemporaryDirectory() as tmp:
        written = fresh or (folder if args.write else Path(tmp) / "fresh")
        written.mkdir(parents=True, exist_ok=True)
        for name in names:
            records = train(name, Path(tmp) / name)
            (written / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
            print(f"{name}: {len(records)} epochs written to {written}", flush=True)
        if args.write:
            return 0
        return report({n: (folder / f"{n}.jsonl", written / f"{n}.jsonl") for n in names})


def report(pairs: dict[str, tuple[Path, Path]]) -> int:
    """Print the comparison table of (before, after) files; 1 when any run differs or is missing."""
    failed = 0
    print("| run | values compared | largest difference | verdict |\n|---|---|---|---|")
    for name, (before, after) in pairs.items():
        if not before.is_file() or not after.is_file():
            print(f"| {name} | - | - | missing {before if not before.is_file() else after} |")
            failed += 1
            continue
        a, b = ([json.loads(x) for x in p.read_text().splitlines()] for p in (before, after))
        worst, problems = compare(a, b)
        count = sum(1 for r in a for k, v in r.items() if isinstance(v, (int, float)) and k not in TIMING)
        print(f"| {name} | {count} | {worst:.2g} | {'same' if not problems else '; '.join(problems[:3])} |")
        failed += bool(problems)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
