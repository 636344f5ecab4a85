"""How many accuracy runs pay to run side by side on one GPU (benchmarks/gpu.sh, phase ``probe``).

For every level N (5, 10 and 18 by default) it starts N short `dhm train cifar10-jpeg` runs at once, the way
`dhm compare --jobs N` does (one process each, through CUDA MPS where it is installed), with the accuracy runs'
settings and a mix of methods in the proportion of the table (plain runs beside runs with the paper's branches).
While they train it watches their ``metrics.jsonl`` files and notes when each epoch ends, so that only epochs run
while all N runs were training (after the last one started, before the first one finished) are counted: start-up
(decoding, CUDA-graph capture) does not dilute the figure. From those epochs it writes ``WORK/probe.json``:

* per run, its epochs per second (validation included) while all N shared the GPU;
* ``plain_cost``: what an epoch of a plain run costs against one of a branched run (their time ratio, measured);
* ``branched_epochs_per_s``: the whole GPU's rate in branched-run epochs (plain epochs counted at their cost).

The epoch planner (gpu_report.py plan) picks the level with the highest rate and sizes the schedule with it.

    python3 benchmarks/gpu_probe.py WORK LEVELS EPOCHS [dhm train overrides...]
    e.g. python3 benchmarks/gpu_probe.py runs/gpu "5 10 18" 3 data.root=... train.cuda_graph=true
"""

from __future__ import annotations

import json
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from dhm.compare import mode_overrides  # noqa: E402
from dhm.config import load_config  # noqa: E402
from dhm.jobs import Job, dhm_argv, mps_daemon, run_jobs  # noqa: E402

RECIPE = "cifar10-jpeg"
CYCLE = ("dhm", "ce", "dsl", "ls", "dhm-rampup", "dhm-gentle")  # the table's methods, plain ones spread out
PLAIN = frozenset({"ce", "ls"})  # no branches: the plain backbone's cost


def _watch(runs: list[Path], done: threading.Event) -> dict[Path, list[tuple[float, dict]]]:
    """(wall time seen, record) of every epoch record of every run, polled until ``done`` is set."""
    seen: dict[Path, list[tuple[float, dict]]] = {run: [] for run in runs}
    while True:
        finished = done.is_set()
        for run, records in seen.items():
            path = run / "metrics.jsonl"
            lines = path.read_text().splitlines() if path.is_file() else []
            now = time.monotonic()
            records += [(now, json.loads(line)) for line in lines[len(records) :] if line.strip()]
        if finished:
            return seen
        time.sleep(0.2)


def _shared_rates(seen: dict[Path, list[tuple[float, dict]]]) -> tuple[dict[Path, float], bool]:
    """Each run's epochs per second over its epochs that ran entirely while every run was training; where a run
    has none (levels too short to overlap, as in the tiny CPU mode), its last epoch, and ``False``."""
    ends = {run: [t for t, _ in records] for run, records in seen.items() if records}
    start = max(times[0] for times in ends.values())  # every run has finished an epoch: all are training
    stop = min(times[-1] for times in ends.values())  # the first run to finish
    rates, overlap = {}, True
    for run, records in seen.items():
        inside = [r["time_s"] for t, r in records if start < t - r["time_s"] + 0.5 and t <= stop]
        if not inside:
            inside, overlap = [records[-1][1]["time_s"]], False
        rates[run] = 1.0 / statistics.fmean(inside)
    return rates, overlap


def probe_level(work: Path, n: int, epochs: int, overrides: list[str]) -> dict:
    """Start ``n`` runs at once and measure how fast they train together."""
    base = load_config(RECIPE, [*overrides, f"train.epochs={epochs}"])
    folder = work / "probe" / f"n{n}"
    jobs, modes = [], {}
    for i in range(n):
        mode = CYCLE[i % len(CYCLE)]
        run = folder / f"{i:02d}-{mode}"
        argv = [*overrides, *mode_overrides(mode, base), f"train.epochs={epochs}", f"train.out_dir={run}"]
        argv += ["train.overwrite=true", "train.progress=false", f"train.seed={i}"]
        jobs.append(Job(f"{mode} #{i}", dhm_argv("train", RECIPE, *argv), run / "train.log"))
        modes[run] = mode
    done = threading.Event()
    result: dict = {}
    watcher = threading.Thread(target=lambda: result.update(_watch(list(modes), done)))
    watcher.start()
    t0 = time.monotonic()
    try:
        with mps_daemon(folder / ".mps", print):
            run_jobs(jobs, n, print)
    finally:
        done.set()
        watcher.join()
    rates, overlap = _shared_rates(result)
    plain = [rates[r] for r in rates if modes[r] in PLAIN]
    branched = [rates[r] for r in rates if modes[r] not in PLAIN]
    cost = statistics.fmean(branched) / statistics.fmean(plain) if plain and branched else 1.0
    return {
        "runs": [{"mode": modes[r], "epochs_per_s": rates[r]} for r in rates],
        "plain_cost": cost,
        "branched_epochs_per_s": sum(branched) + cost * sum(plain),
        "overlap": overlap,
        "wall_s": time.monotonic() - t0,
    }


def main(argv: list[str]) -> None:
    work, levels, epochs, overrides = Path(argv[0]), [int(v) for v in argv[1].split()], int(argv[2]), argv[3:]
    out = {"epochs": epochs, "levels": {}}
    for n in levels:
        out["levels"][str(n)] = level = probe_level(work, n, epochs, overrides)
        print(
            f"[probe] {n} runs side by side: {level['branched_epochs_per_s']:.3f} branched-run epochs/s "
            f"(a plain epoch costs {level['plain_cost']:.2f} of one; overlap measured: {level['overlap']}), "
            f"{level['wall_s']:.0f} s"
        )
    (work / "probe.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main(sys.argv[1:])
