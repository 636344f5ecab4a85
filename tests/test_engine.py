"""The engine end to end: runs, their files, resume after SIGKILL, evaluation and export, bad inputs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import SHARED_DATA
from helpers import SMOKE, dhm, dhm_here

from dhm.config import load_config
from dhm.engine import build_trainer
from dhm.engine.checkpoint import FORMAT, load_file


def test_trainer_in_process_writes_every_artifact(tmp_path):
    cfg = load_config("smoke", [*SMOKE, f"train.out_dir={tmp_path}"])
    summary = build_trainer(cfg).fit()
    for name in (
        "config.yaml",
        "metrics.jsonl",
        "metrics.csv",
        "last.pt",
        "best.pt",
        "deploy.pt",
        "summary.json",
        "loss.png",
        "accuracy.png",
        "lr.png",
    ):
        assert (tmp_path / name).is_file(), name
    saved = json.loads((tmp_path / "summary.json").read_text())
    for key in ("test_acc1", "test_acc1_last", "best_val_acc1", "epochs", "wall_time_s", "config"):
        assert key in saved
    assert saved["epochs"] == 2 and 0 <= saved["test_acc1"] <= 100 and summary["test_acc1"] == saved["test_acc1"]
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    assert {"train/ce/head1", "train/kl/head1->main", "val/acc1/ensemble", "val/acc1/head2", "lr"} <= set(records[0])
    assert (tmp_path / "metrics.csv").read_text().splitlines()[0].startswith("epoch,lr")
    ckpt = load_file(tmp_path / "last.pt", FORMAT)
    assert {"model", "optimizer", "scheduler", "scaler", "rng", "config", "state"} <= set(ckpt)
    deploy = torch.load(tmp_path / "deploy.pt", weights_only=True)
    assert not any(k.startswith(("branches", "backbone")) for k in deploy["state_dict"])


def test_cli_train_digits_then_eval_and_export(tmp_path):
    out = tmp_path / "run"
    result = dhm("train", "demo", "train.epochs=1", "train.limit_batches=3", f"train.out_dir={out}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == str(out)
    assert "ensemble" in result.stdout and "test (best.pt)" in result.stdout
    result = dhm_here("eval", str(out / "best.pt"), "--heads")
    assert result.returncode == 0, result.stderr
    assert "test: top-1 % main" in result.stdout and "head2" in result.stdout
    from dhm import create_model

    plain = create_model("cifar_resnet20", num_classes=10, branches="none", in_channels=1).eval()
    deploy = torch.load(out / "deploy.pt", weights_only=True)
    plain.load_state_dict(deploy["state_dict"], strict=True)
    x = torch.randn(2, 1, 32, 32)
    for fmt in ("pt", "safetensors", "torchscript"):
        if fmt == "safetensors":
            pytest.importorskip("safetensors")
        result = dhm_here("export", str(out / "best.pt"), "--format", fmt, "-o", str(tmp_path / f"m.{fmt}"))
        assert result.returncode == 0, result.stderr
    from safetensors.torch import load_file as load_safetensors

    plain.load_state_dict(load_safetensors(str(tmp_path / "m.safetensors")), strict=True)
    scripted = torch.jit.load(str(tmp_path / "m.torchscript"))
    torch.testing.assert_close(scripted(x), plain(x))


def _weights(path):
    return torch.load(path, weights_only=True)["model"]


@pytest.mark.slow  # the process is the point; tests/test_faults.py kills at 20 more points
def test_resume_after_sigkill_equals_uninterrupted_run(tmp_path):
    """A run killed mid-epoch by SIGKILL and resumed with train.resume=auto ends with the same weights."""
    args = [
        "smoke",
        "train.deterministic=true",
        "train.epochs=3",
        "train.progress=false",
        "data.options.train_size=1536",
        "data.val_size=64",
        "data.options.test_size=64",
        "data.batch_size=32",
        "model.dynamic_fork=true",
        "loss.dynamic=official",
    ]
    reference = dhm("train", *args, f"train.out_dir={tmp_path / 'ref'}")
    assert reference.returncode == 0, reference.stderr

    killed = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "dhm", "train", *args, f"train.out_dir={killed}"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while not (killed / "last.pt").exists() and time.time() < deadline:  # epoch 1 is done ...
        time.sleep(0.05)
    time.sleep(0.6)  # ... and epoch 2 is under way
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    interrupted = load_file(killed / "last.pt", FORMAT)["state"]["epoch"]
    assert interrupted < 3 and not (killed / "summary.json").exists()

    resumed = dhm("train", *args, f"train.out_dir={killed}", "train.resume=auto")
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed from {killed / 'last.pt'} after epoch {interrupted}" in resumed.stdout
    a, b = _weights(tmp_path / "ref" / "last.pt"), _weights(killed / "last.pt")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    lines = (killed / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3]  # the replayed epoch is not duplicated


BAD_INPUTS = {
    "missing data root": (["mnist", "data.root=/nonexistent/mnist"], "does not exist"),
    "unknown recipe key": (["smoke", "optim.learning_rate=0.1"], "did you mean"),
    "wrong value type": (["smoke", "train.epochs=two"], "train.epochs expects int"),
    "label out of range": (["demo", "model.num_classes=5"], "out of range for 5 classes"),
    "unknown model": (["smoke", "model.name=resnet_32"], "did you mean"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_one_line_and_exit_2(tmp_path, case):
    args, message = BAD_INPUTS[case]
    result = dhm_here("train", *args, f"train.out_dir={tmp_path / 'run'}", cwd=tmp_path)
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dhm: error:") and message in lines[0], result.stderr


def test_corrupt_tarball_and_empty_folder_exit_2(tmp_path):
    from test_data import write_cifar_tarball

    write_cifar_tarball(tmp_path)  # not the official bytes: md5 must refuse it
    result = dhm_here("train", "smoke", "data.name=cifar10", f"data.root={tmp_path}", cwd=tmp_path)
    assert result.returncode == 2 and "wrong md5" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    (tmp_path / "imgs" / "train" / "cat").mkdir(parents=True)
    result = dhm_here("train", "smoke", "data.name=imagefolder", f"data.root={tmp_path / 'imgs'}", cwd=tmp_path)
    assert (
        result.returncode == 2 and "no images found" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    )


def test_checkpoint_of_another_model_is_refused(tmp_path):
    run = tmp_path / "run"
    assert dhm_here("train", "smoke", *SMOKE, "train.epochs=1", f"train.out_dir={run}").returncode == 0
    result = dhm_here("train", "smoke", *SMOKE, "model.name=cifar_resnet32", f"train.resume={run / 'last.pt'}")
    assert result.returncode == 2 and "belongs to another run" in result.stderr and "model.name" in result.stderr
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    result = dhm_here("eval", str(tmp_path / "junk.pt"))
    assert result.returncode == 2 and "cannot load checkpoint" in result.stderr


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED_DATA / "mnist").is_dir(), reason="../shared/data/mnist is not present")
def test_real_mnist_run(tmp_path):
    result = dhm(
        "train",
        "mnist",
        f"data.root={SHARED_DATA / 'mnist'}",
        "train.epochs=1",
        "train.limit_batches=50",
        "data.val_size=1000",
        "train.progress=false",
        f"train.out_dir={tmp_path}",
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["test_acc1"] > 85  # 50 steps of 128 real digits (measured: 89.0%; chance 10%)
