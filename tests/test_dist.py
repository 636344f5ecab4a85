"""Real DDP: two processes under torchrun with gloo on the CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from helpers import dhm

pytestmark = pytest.mark.dist

COMMON = [
    "smoke",
    "train.progress=false",
    "data.options.train_size=1024",
    "data.val_size=256",
    "data.options.test_size=256",
    "data.batch_size=64",
    "optim.lr=0.1",
]


def _params(path):
    state = torch.load(path, weights_only=True)["model"]
    return {k: v for k, v in state.items() if "running_" not in k and "num_batches" not in k}


def test_ddp_step_equals_single_process_on_the_same_global_batch(tmp_path):
    """2 processes x 32 images and 1 process x 2 accumulation steps of 32 take the same optimizer step: each
    BatchNorm normalises the same 32 images and the gradients are averaged the same way, so only the float
    reduction order differs (measured: 1.3e-7 after one step)."""
    args = [*COMMON, "train.epochs=1", "train.limit_batches=1", "train.deterministic=true"]
    ddp = dhm("train", *args, f"train.out_dir={tmp_path / 'ddp'}", torchrun=2)
    if ddp.returncode != 0 and "SIGABRT" in ddp.stderr:  # seen once in CI (2026-12-04), a rank aborted in gloo
        print(f"a rank aborted (SIGABRT), rerunning once:\n{ddp.stderr[-3000:]}")  # kept in the test's output
        ddp = dhm("train", *args, f"train.out_dir={tmp_path / 'ddp'}", "train.overwrite=true", torchrun=2)
    assert ddp.returncode == 0, ddp.stderr[-2000:]
    single = dhm("train", *args, "train.accum_steps=2", f"train.out_dir={tmp_path / 'single'}")
    assert single.returncode == 0, single.stderr
    a, b = _params(tmp_path / "ddp" / "last.pt"), _params(tmp_path / "single" / "last.pt")
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5


def test_ddp_training_matches_single_process_validation_accuracy(tmp_path):
    """Same recipe and global batch (64), 8 epochs, 1 vs 2 processes. Trajectories are not bit-identical (per-process
    BatchNorm statistics over 32 instead of 64 images, reduction order), so validation accuracy is compared with a
    tolerance: both runs converge on this learnable set, and we allow 3 points (8 of 256 images). Measured on 2 CPU
    cores: 100.00 (2 processes) vs 99.61-100.00 (1 process)."""
    args = [*COMMON, "train.epochs=8"]
    ddp = dhm("train", *args, f"train.out_dir={tmp_path / 'ddp'}", torchrun=2)
    if ddp.returncode != 0 and "SIGABRT" in ddp.stderr:  # seen once in CI (2026-12-04), a rank aborted in gloo
        print(f"a rank aborted (SIGABRT), rerunning once:\n{ddp.stderr[-3000:]}")  # kept in the test's output
        ddp = dhm("train", *args, f"train.out_dir={tmp_path / 'ddp'}", "train.overwrite=true", torchrun=2)
    assert ddp.returncode == 0, ddp.stderr[-2000:]
    assert ddp.stdout.strip().splitlines()[-1] == str(tmp_path / "ddp")  # rank 0 alone prints the run directory
    single = dhm("train", *args, f"train.out_dir={tmp_path / 'single'}")
    assert single.returncode == 0, single.stderr
    s_ddp = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    s_one = json.loads((tmp_path / "single" / "summary.json").read_text())
    assert s_ddp["world_size"] == 2 and s_one["world_size"] == 1
    assert s_ddp["best_val_acc1"] > 90 and s_one["best_val_acc1"] > 90
    assert abs(s_ddp["best_val_acc1"] - s_one["best_val_acc1"]) <= 3.0


FIT_SCRIPT = """
import sys, torch, dhm
from torch.utils.data import DataLoader, DistributedSampler
from dhm.engine import dist
sys.path.insert(0, {tests!r})
from test_fit import _loaders, _model

info = dist.setup("cpu")  # the entry point joins the process group; dhm.fit never does
train, val, test = _loaders()
train = DataLoader(train.dataset, batch_size=50, sampler=DistributedSampler(train.dataset, seed=0))
model = _model()
settings = {{"train.progress": "false", "train.epochs": 3, "optim.lr": 0.05}}
dhm.fit(model, train, val, test, out_dir={out!r}, settings=settings)
torch.save(dhm.strip(model).state_dict(), {out!r} + f"/rank{{info.rank}}.pt")
dist.teardown()
"""


def test_fit_under_torchrun_trains_one_model_on_two_processes(tmp_path):
    """dhm.fit on a user's model and DistributedSampler loaders, 2 processes: DDP keeps both replicas equal."""
    from pathlib import Path

    out = tmp_path / "run"
    script = tmp_path / "fit_ddp.py"
    script.write_text(FIT_SCRIPT.format(tests=str(Path(__file__).parent), out=str(out)))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["epochs"] == 3 and summary["test_acc1"] > 30
    a, b = (torch.load(out / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert all(torch.equal(a[k], b[k]) for k in a if "running_" not in k and "num_batches" not in k)


def test_reported_metrics_are_those_of_the_saved_model(tmp_path):
    """Under DDP every rank ends an epoch with its own BatchNorm statistics and evaluates its shard; rank 0's are
    saved. The reported test accuracy (summary.json, best.pt's) and the validation accuracy that chose best.pt must
    be what the saved best.pt gives when evaluated alone. Small per-rank batches (4 images) make the ranks'
    statistics differ; before the fix this run reported test 19.53% / val 17.97% where its best.pt gives 19.92% /
    17.58% (AMD EPYC, 2 processes)."""
    from dhm.engine import evaluate_checkpoint

    out = tmp_path / "ddp"
    args = [*COMMON, "train.epochs=1", "data.options.train_size=512", "data.batch_size=8", "optim.lr=0.05"]
    args.append("data.val_size=0.5")  # the same 256 images as the count did (a count may take at most a quarter)
    args.append(f"train.out_dir={out}")
    ddp = dhm("train", *args, torchrun=2)
    if ddp.returncode != 0 and "SIGABRT" in ddp.stderr:  # seen once in CI (2026-12-04), a rank aborted in gloo
        ddp = dhm("train", *args, "train.overwrite=true", torchrun=2)
    assert ddp.returncode == 0, ddp.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    saved = evaluate_checkpoint(out / "best.pt").splits
    assert summary["test"]["acc1/main"] == pytest.approx(
        saved["test"]["acc1/main"], abs=0.006
    )  # summaries round to 0.01
    assert summary["best_val_acc1"] == pytest.approx(saved["val"]["acc1/main"], abs=0.006)  # what chose it
