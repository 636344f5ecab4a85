"""The golden-run check: a fixed-seed deterministic smoke run must write the same metrics as at commit babcdca
(before the engine became seams). Compares every metrics.jsonl value (within 1e-6, the same keys in the same
order; timing keys excepted) and the summary's keys and figures with the files in benchmarks/results/golden/.

    python benchmarks/golden.py            # trains into a temporary folder, prints the largest difference

Exit 0 when they match, 1 otherwise. The golden files were written on the 2-core CPU machine of RESULTS.md;
floating-point results on another CPU may differ beyond 1e-6 for reasons that have nothing to do with dhm.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent / "results" / "golden"
COMMAND = [
    "smoke",
    "train.epochs=2",
    "train.amp=off",
    "train.channels_last=false",
    "train.threads=1",
    "train.deterministic=true",
    "train.progress=false",
]
TIMING = {"images_per_s", "time_s"}
SUMMARY_SKIP = {"run_dir", "config", "wall_time_s", "versions"}


def _compare(a, b, where: str, problems: list[str], worst: list[float]) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        if list(a) != list(b):
            problems.append(f"{where}: keys differ: {list(a)} != {list(b)}")
        for key in a:
            if key in b and key not in TIMING:
                _compare(a[key], b[key], f"{where}/{key}", problems, worst)
    elif isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        worst.append(abs(a - b))
        if abs(a - b) > 1e-6:
            problems.append(f"{where}: {a} != {b}")
    elif a != b:
        problems.append(f"{where}: {a!r} != {b!r}")


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        subprocess.run([sys.executable, "-m", "dhm", "train", *COMMAND, f"train.out_dir={run}"], check=True)
        got = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        summary = json.loads((run / "summary.json").read_text())
    want = [json.loads(line) for line in (HERE / "smoke_babcdca_metrics.jsonl").read_text().splitlines()]
    want_summary = json.loads((HERE / "smoke_babcdca_summary.json").read_text())
    problems: list[str] = []
    worst: list[float] = []
    if len(got) != len(want):
        problems.append(f"{len(got)} epochs recorded, {len(want)} expected")
    for epoch, (a, b) in enumerate(zip(got, want), 1):
        _compare(a, b, f"epoch {epoch}", problems, worst)
    # The summary keeps every key it had (new keys may be added after them); the values of those must agree.
    missing = [k for k in want_summary if k not in summary]
    if missing:
        problems.append(f"summary lacks {missing}")
    kept = {k: summary[k] for k in want_summary if k in summary and k not in SUMMARY_SKIP}
    _compare(kept, want_summary, "summary", problems, worst)
    print(f"compared {len(worst)} values; largest difference {max(worst, default=0.0):.3g}")
    for line in problems[:20]:
        print("MISMATCH", line)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
