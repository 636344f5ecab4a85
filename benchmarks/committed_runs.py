"""Long accuracy tables outlive a session's machine: a finished run's ``summary.json`` (and, when asked,
``metrics.jsonl``) is kept in the repository as one flat file per run, and put back into the runs folder on the
next machine so that ``dhm compare`` skips the run and the tables read it again.

    python benchmarks/committed_runs.py keep RUNS KEPT [--splits] [--metrics]     # runs -> repository
    python benchmarks/committed_runs.py restore RUNS KEPT [--splits] [--metrics]  # repository -> runs

``RUNS/<mode>/seed<s>/`` is kept as ``KEPT/<mode>_seed<s>_summary.json``; with ``--splits`` (identity splits, as
benchmarks/pku_pretrained.sh lays them out) ``RUNS/split<k>/<mode>/seed<s>/`` as
``KEPT/split<k>_<mode>_seed<s>_summary.json``. ``keep`` writes paths relative to the working directory (no
machine's absolute path in the repository); ``restore`` never overwrites a run that has its own summary.
"""

from __future__ import annotations

import argparse
import re
import shutil
from pathlib import Path

FILES = {"summary.json": "summary.json", "metrics.jsonl": "metrics.jsonl"}
_NAME = re.compile(r"^(?:split(?P<split>\d+)_)?(?P<mode>.+)_seed(?P<seed>\d+)_summary\.json$")


def _stem(run: Path, runs: Path) -> str:
    return "_".join(run.relative_to(runs).parts)  # [split<k>_]<mode>_seed<s>


def keep(runs: Path, kept: Path, splits: bool = False, metrics: bool = False) -> list[Path]:
    """Copy every finished run's summary (and metrics) under ``runs`` into ``kept``; returns the files written."""
    pattern = "split*/*/seed*/summary.json" if splits else "*/seed*/summary.json"
    here = f"{Path.cwd()}/"
    written = []
    kept.mkdir(parents=True, exist_ok=True)
    for summary in sorted(runs.glob(pattern)):
        run = summary.parent
        stem = _stem(run, runs)
        target = kept / f"{stem}_summary.json"
        target.write_text(summary.read_text().replace(here, ""))
        written.append(target)
        if metrics and (run / "metrics.jsonl").is_file():
            shutil.copyfile(run / "metrics.jsonl", kept / f"{stem}_metrics.jsonl")
            written.append(kept / f"{stem}_metrics.jsonl")
    return written


def restore(runs: Path, kept: Path, splits: bool = False, metrics: bool = False) -> list[Path]:
    """Put every kept run back under ``runs`` where that run has no summary yet; returns the run folders."""
    restored = []
    for path in sorted(kept.glob("*_summary.json")):
        match = _NAME.match(path.name)
        if match is None or (match["split"] is not None) != splits:
            continue
        parts = [f"split{match['split']}"] if splits else []
        run = runs.joinpath(*parts, match["mode"], f"seed{match['seed']}")
        if (run / "summary.json").is_file():
            continue
        run.mkdir(parents=True, exist_ok=True)
        log = path.with_name(path.name.removesuffix("_summary.json") + "_metrics.jsonl")
        if metrics and log.is_file():
            shutil.copyfile(log, run / "metrics.jsonl")
        shutil.copyfile(path, run / "summary.json")  # last: its presence means the run is complete
        restored.append(run)
    return restored


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=("keep", "restore"))
    parser.add_argument("runs", type=Path, help="the runs folder of dhm compare (--out)")
    parser.add_argument("kept", type=Path, help="the repository's folder of kept runs")
    parser.add_argument("--splits", action="store_true", help="runs under split<k>/ folders")
    parser.add_argument("--metrics", action="store_true", help="metrics.jsonl too")
    args = parser.parse_args(argv)
    done = (keep if args.action == "keep" else restore)(args.runs, args.kept, args.splits, args.metrics)
    what = "kept" if args.action == "keep" else "restored"
    print(f"committed_runs: {len(done)} {'files' if args.action == 'keep' else 'runs'} {what} ({args.kept})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
