"""The epoch planner of benchmarks/gpu.sh (gpu_report.py plan) on measured side-by-side rates: the paper's 164
epochs when every run fits, else the longest schedule that does (at least 120, the same for all), else as many
whole seeds as fit at 120; runs side by side at the probe's fastest level."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
MODES = "ce,ls,dsl,dhm,dhm-rampup,dhm-gentle"  # 4 branched + 2 plain runs per seed


def _plan(work: Path, budget_s: float, levels: dict[int, float], cost: float = 0.5, fixed: int = 0) -> dict:
    spec = importlib.util.spec_from_file_location("gpu_report", BENCH / "gpu_report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    probe = {
        str(n): {"branched_epochs_per_s": r, "plain_cost": cost, "overlap": True, "wall_s": 1}
        for n, r in levels.items()
    }
    (work / "probe.json").write_text(json.dumps({"epochs": 4, "levels": probe}))
    return module.plan(str(work), budget_s, fixed, 5, MODES, "3")


def test_everything_fits_at_the_paper_schedule(tmp_path):
    # 3 seeds x (4 + 2 x 0.5) = 15 branched epochs per epoch; at 10 per second: 1.5 s per epoch, 164 -> 306 s
    plan = _plan(tmp_path, 400, {5: 4.0, 10: 8.0, 18: 10.0})
    assert (plan["epochs"], plan["milestones"], plan["seeds"], plan["jobs"]) == (164, [81, 122], [0, 1, 2], 18)


def test_the_longest_schedule_that_fits_and_never_under_120(tmp_path):
    plan = _plan(tmp_path, 60 + 140 * 1.5, {5: 4.0, 10: 8.0, 18: 10.0})
    assert (plan["epochs"], plan["milestones"], plan["seeds"]) == (140, [69, 104], [0, 1, 2])


def test_whole_seeds_when_not_even_120_epochs_of_all_fit(tmp_path):
    # 3 seeds at 120 epochs: 60 + 120 x 1.5 = 240 s; 2 seeds (12 runs, the 10-run level: 8 epochs/s): 60 + 120 x
    # 1.25 = 210 s; 1 seed (6 runs, the 5-run level: 4 epochs/s): 60 + 120 x 1.25 = 210 s
    two = _plan(tmp_path, 220, {5: 4.0, 10: 8.0, 18: 10.0})
    assert (two["seeds"], two["seeds_left"], two["epochs"], two["jobs"]) == ([0, 1], [2], 128, 10)
    assert "ACC_EPOCHS=128" in two["note"]  # the later seed must train the same schedule
    one = _plan(tmp_path, 205, {5: 4.0, 10: 8.0, 18: 10.0})
    assert (one["seeds"], one["seeds_left"], one["epochs"], one["jobs"]) == ([0], [1, 2], 120, 5)


@pytest.mark.parametrize("fixed", [1, 130])
def test_a_fixed_schedule_is_kept(tmp_path, fixed):
    assert _plan(tmp_path, 10_000, {5: 4.0}, fixed=fixed)["epochs"] == fixed


def test_the_probe_counts_only_epochs_run_while_every_run_trained():
    spec = importlib.util.spec_from_file_location("gpu_probe", BENCH / "gpu_probe.py")
    probe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(probe)
    a, b = Path("a"), Path("b")
    # a starts at 0 with 10 s epochs alone, then 20 s epochs once b trains; b starts late (first epoch ends at 40)
    seen = {
        a: [(10.0, {"time_s": 10.0}), (30.0, {"time_s": 20.0}), (50.0, {"time_s": 20.0}), (70.0, {"time_s": 20.0})],
        b: [(40.0, {"time_s": 25.0}), (65.0, {"time_s": 25.0}), (90.0, {"time_s": 25.0})],
    }
    rates, overlap = probe._shared_rates(seen)  # window: 40 (b's first epoch end) to 70 (a's last)
    assert overlap and rates[a] == pytest.approx(1 / 20) and rates[b] == pytest.approx(1 / 25)
    short = {a: [(10.0, {"time_s": 10.0})], b: [(40.0, {"time_s": 30.0})]}  # no epoch inside: last epochs, flagged
    assert probe._shared_rates(short) == ({a: 1 / 10, b: 1 / 30}, False)
