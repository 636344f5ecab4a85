"""``dhm bench`` and ``dhm compare`` on tiny settings: the numbers they print are produced, consistent and saved."""

from __future__ import annotations

import json
import os

import pytest
import torch
from helpers import COMPARE_TINY, dhm, dhm_here

from dhm.bench import Case, branch_specs, count_flops, run_bench, to_markdown
from dhm.compare import mode_overrides, run_compare, summarise
from dhm.methods import METHODS


def test_flop_ratio_of_branches_grows_and_matches_the_layout():
    device = torch.device("cpu")
    flops = [
        count_flops(Case("growth", "cifar_resnet20", "ce" if k == 0 else "dhm", batch=4, branches=k), 10, device)
        for k in range(4)
    ]
    assert flops[0] < flops[1] < flops[2] < flops[3]
    assert 2.0 < flops[2] / flops[0] < 3.5  # docs/method.md: DHM costs about 1.6-2.8x the FLOPs of plain training
    assert len(branch_specs("cifar_resnet20", 3)) == 3


def test_run_bench_rows_and_markdown(tmp_path):
    result = run_bench(
        "cifar_resnet20",
        classes=10,
        batch=8,
        suites=("speed", "inference", "growth"),
        modes=("ce", "dhm"),
        precisions=("fp32",),
        formats=("nchw",),
        compile_options=(False,),
        batches=(8,),
        steps=2,
        warmup=1,
    )
    speed = [r for r in result["rows"] if r["suite"] == "speed"]
    assert {r["mode"] for r in speed} == {"ce", "dhm"} and all(r["images_per_s"] > 0 for r in speed)
    assert all("saved_activations_mb" in r for r in speed) and result["environment"]["threads"] >= 1
    growth = [r for r in result["rows"] if r["suite"] == "growth"]
    assert [r["branches"] for r in growth] == [0, 1, 2, 3] and growth[0]["flop_ratio"] == 1.0
    inference = {r["what"]: r for r in result["rows"] if r["suite"] == "inference"}
    assert "stripped DHM model" in inference and "every head (forward_heads)" in inference
    text = to_markdown(result)
    assert "**speed**" in text and "**growth**" in text and "| ce |" in text


def test_compare_resolves_a_mode_as_dhm_train_does():
    from dhm.config import load_config

    demo = load_config("demo")  # the demo recipe ramps mimicking up, as that recipe needs; compare keeps it
    assert demo.loss.rampup_epochs > 0
    for mode in ("dhm", "ce", "dml", "dhm-rampup"):
        assert load_config("demo", mode_overrides(mode, demo)) == load_config("demo", [f"loss.mode={mode}"])
    assert load_config("demo", mode_overrides("dhm", demo)).loss.rampup_epochs == 3
    ramp = load_config("demo", mode_overrides("dhm-rampup", demo))
    assert ramp.loss.rampup_epochs == 3 and ramp.loss.rampup == "sigmoid"


def test_compare_runs_skips_and_tabulates(tmp_path):
    assert {"ce", "dsl", "dhm", "dhm-official", "dhm-bernoulli", "dhm-fork", "dhm-rampup", "dhm-gentle"} <= set(METHODS)
    overrides = COMPARE_TINY
    result = run_compare("smoke", 2, ["ce", "dhm-official"], overrides, tmp_path, log=lambda s: None)
    for mode in ("ce", "dhm-official"):
        for seed in (0, 1):
            summary = json.loads((tmp_path / mode / f"seed{seed}" / "summary.json").read_text())
            assert summary["config"]["train"]["seed"] == seed
    assert (
        json.loads((tmp_path / "dhm-official" / "seed0" / "summary.json").read_text())["config"]["loss"]["dynamic"]
        == "released"
    )
    assert result["modes"]["ce"]["test_best"]["n"] == 2
    assert (tmp_path / "compare.md").read_text().startswith("| mode | n |") and (tmp_path / "compare.png").is_file()
    assert (tmp_path / "compare_dynamics.png").stat().st_size > 10_000  # per-epoch dynamics, one row per mode
    record = json.loads((tmp_path / "dhm-official" / "seed0" / "metrics.jsonl").read_text().splitlines()[0])
    assert 0 <= record["val/agree"] <= 100 and 0 <= record["train/acc1/head1"] <= 100
    assert set(result["modes"]["dhm-official"]["test_heads"]) == {"main", "head1", "head2", "ensemble"}
    logs = []
    run_compare("smoke", 2, ["ce"], overrides, tmp_path, log=logs.append)
    assert logs == ["[compare] ce seed 0: done, skipped", "[compare] ce seed 1: done, skipped"]
    assert (
        summarise(tmp_path, ["ce"], 2)["modes"]["ce"]["test_best"]["values"]
        == result["modes"]["ce"]["test_best"]["values"]
    )
    # a run kept without its metrics file (benchmarks/committed_runs.py) has no training accuracy: the cell says
    # over how many runs its mean is, never a NaN mean
    (tmp_path / "ce" / "seed1" / "metrics.jsonl").unlink()
    kept = summarise(tmp_path, ["ce"], 2)["modes"]["ce"]
    assert kept["test_best"]["n"] == 2 and kept["train_last"]["n"] == 1
    assert kept["train_last"]["mean"] == result["modes"]["ce"]["train_last"]["values"][0]
    from dhm.compare.table import to_markdown as compare_markdown

    row = compare_markdown({"modes": {"ce": kept}}).splitlines()[2]
    assert row.endswith(f"| {kept['train_last']['mean']:.2f} (n=1) | {kept['wall_time_s']['mean']:.0f} |"), row


def test_cli_bench_and_compare_help(capsys):
    from dhm.cli import main

    for command in ("bench", "compare", "train", "eval", "export", "models", "recipes", "config"):
        with pytest.raises(SystemExit) as exit_info:  # argparse's --help exits 0 after printing
            main([command, "--help"])
        assert exit_info.value.code == 0 and "usage: dhm" in capsys.readouterr().out
    assert dhm("compare", "--help").returncode == 0  # and the real console entry point


def test_unknown_compare_mode_exits_2(tmp_path):
    result = dhm_here("compare", "smoke", "--modes", "ce,dhm-fancy", "--out", str(tmp_path))
    assert result.returncode == 2 and "unknown comparison mode 'dhm-fancy'" in result.stderr


@pytest.mark.parametrize("amp", ["off", "auto"])
def test_amp_values_parse(amp):
    from dhm.config import load_config

    assert load_config("smoke", [f"train.amp={amp}"]).train.amp == amp


def test_side_by_side_jobs_split_the_cores_and_report_failures(tmp_path, monkeypatch):
    import sys

    from dhm.errors import DHMError
    from dhm.jobs import Job, run_jobs

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    show = [sys.executable, "-c", "import os; print(os.environ['OMP_NUM_THREADS'])"]
    jobs = [Job(f"job{i}", show, tmp_path / f"job{i}.log") for i in range(3)]
    jobs.append(Job("bad", [sys.executable, "-c", "raise SystemExit(5)"], tmp_path / "bad.log"))
    lines: list[str] = []
    with pytest.raises(DHMError, match="1 run\\(s\\) failed: bad"):
        run_jobs(jobs, 2, lines.append)
    cores = len(os.sched_getaffinity(0))
    for i in range(3):
        assert (tmp_path / f"job{i}.log").read_text().strip() == str(max(1, cores // 2))
    assert any("failed (exit 5)" in line for line in lines)
    monkeypatch.setenv("OMP_NUM_THREADS", "7")  # a value the user set is kept
    run_jobs(jobs[:1], 2, lines.append)
    assert (tmp_path / "job0.log").read_text().split() == [str(max(1, cores // 2)), "7"]


def test_a_mode_may_carry_its_own_settings_for_sweeps():
    from dhm.compare import mode_overrides
    from dhm.config import load_config
    from dhm.registry import RegistryError

    cfg = load_config("smoke", ["train.epochs=8"])
    got = mode_overrides("dhm-rampup+loss.rampup_epochs=4+loss.temperature=3", cfg)
    assert got == ["loss.mode=dhm-rampup", "loss.rampup_epochs=4", "loss.temperature=3"]
    swept = load_config("smoke", ["train.epochs=8", *got]).loss
    assert (swept.rampup_epochs, swept.rampup, swept.temperature) == (4, "sigmoid", 3.0)  # the override tunes it
    assert load_config("smoke", ["train.epochs=8", "loss.mode=dhm-rampup"]).loss.rampup_epochs == 2
    with pytest.raises(RegistryError, match="unknown comparison mode"):
        mode_overrides("dhm-nope+loss.alpha=1", cfg)
    # keys with digits split too (they used to stay glued to the method's name)
    assert mode_overrides("dks+loss.t2=true+data.sampler_options.instances=4", cfg) == [
        "loss.mode=dks",
        "loss.t2=true",
        "data.sampler_options.instances=4",
    ]


@pytest.mark.parametrize("epochs", [10, 30])
def test_gentle_mode_is_the_setting_the_sweep_chose(epochs):
    """benchmarks/never_hurts.sh ran the preset as dhm-rampup with a half-run ramp and alpha 0.5 (RESULTS.md)."""
    from dataclasses import replace

    from dhm.compare import mode_overrides
    from dhm.config import load_config

    base = load_config("cifar10-jpeg", [f"train.epochs={epochs}"])
    swept = f"dhm-rampup+loss.rampup_epochs={epochs // 2}+loss.alpha=0.5"
    gentle = load_config("cifar10-jpeg", [f"train.epochs={epochs}", *mode_overrides("dhm-gentle", base)])
    chosen = load_config("cifar10-jpeg", [f"train.epochs={epochs}", *mode_overrides(swept, base)])
    # the loss configs name their method (loss.mode); every setting is the same, and loss.preset=gentle too
    assert gentle.loss == replace(chosen.loss, mode="dhm-gentle") and gentle.model == chosen.model
    preset = load_config("cifar10-jpeg", [f"train.epochs={epochs}", "loss.preset=gentle"])
    assert replace(preset.loss, preset="", mode="dhm-gentle") == gentle.loss


def test_one_seed_shows_no_spread():
    from dhm.compare.table import cell

    assert cell({"mean": 71.234, "std": 0.0, "n": 1}) == "71.23"  # not "71.23 +- 0.00"
    assert cell({"mean": 71.234, "std": 0.5, "n": 3}) == "71.23 +- 0.50"


def test_compare_table_puts_every_head_in_its_column_and_compares_with_ls():
    from dhm.compare.table import to_markdown as compare_markdown

    def stat(*values):
        mean = sum(values) / len(values)
        std = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5
        return {"mean": mean, "std": std, "n": len(values), "values": list(values)}

    def row(acc, heads=None):
        return {k: acc for k in ("test_best", "test_last", "val_best", "train_last")} | {
            "wall_time_s": stat(1.0, 1.0),
            "test_heads": heads or {},
        }

    rows = {
        "ce": row(stat(68.0, 69.0)),
        "ls": row(stat(67.0, 68.0)),
        "dsl": row(
            stat(68.0, 68.0), {"main": stat(68.0, 68.0), "head1": stat(69.0, 70.0), "ensemble": stat(71.0, 71.0)}
        ),
        "one": row(
            stat(70.0, 71.0), {"main": stat(70.0, 71.0), "gate": stat(72.0, 72.0), "ensemble": stat(73.0, 73.0)}
        ),
        "okddip": row(stat(70.0, 70.0), {"main": stat(70.0, 70.0), "head10": stat(1.0, 1.0), "head2": stat(2.0, 2.0)}),
    }
    text = compare_markdown({"modes": rows})
    heads = [line for line in text.splitlines() if line.startswith("| mode | main")][0]
    assert heads == "| mode | main | head1 | head2 | head10 | gate | ensemble |"
    assert "| one | 70.50 +- 0.71 | - | - | - | 72.00 +- 0.00 | 73.00 +- 0.00 |" in text
    assert "| dsl | 68.00 +- 0.00 | 69.50 +- 0.71 | - | - | - | 71.00 +- 0.00 |" in text
    assert "| mode | - ce | - ls | - dsl |" in text
    assert "| one | +2.00 (+2.8 sd) | +3.00 (+4.2 sd) | +2.50 (+5.0 sd) |" in text


def test_compare_help_lists_every_method_and_eval_help_names_the_retrieval_metrics(capsys):
    from dhm.cli import main
    from dhm.methods import list_methods

    with pytest.raises(SystemExit):
        main(["compare", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert all(name in text for name in list_methods())  # the siblings too, not only the DHM family
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    assert "mAP, rank-1/5/10" in " ".join(capsys.readouterr().out.split())


def test_a_run_that_kept_its_last_epoch_is_tabulated_on_the_tasks_primary_metric():
    """summary["select"] of a run with train.select=last (the retrieval task's default) names no metric."""
    from dhm.compare.table import measured

    task, metric, report = measured({"task": "retrieval", "select": "last epoch"})
    assert (task.name, metric, report) == ("retrieval", "mAP/main", "test")
    assert measured({"task": "classification", "select": "val/acc1/head1"})[1] == "acc1/head1"
