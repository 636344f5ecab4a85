"""Small things a newcomer notices: what resume=auto says when there is nothing to resume, the learning rate a
warm-up epoch reports, config dumps that show only what applies, and the smoke recipe actually learning."""

from __future__ import annotations

import json

import pytest

from dhm.config import dump_config, load_config
from dhm.engine import build_trainer

TINY = [
    "train.progress=false",
    "data.options.train_size=256",
    "data.options.test_size=64",
    "data.val_size=64",
    "data.batch_size=32",
]


def test_resume_auto_with_nothing_to_resume_says_so(tmp_path, capsys):
    trainer = build_trainer(
        load_config("smoke", [*TINY, "train.resume=auto", f"train.runs_root={tmp_path}", "train.epochs=1"])
    )
    trainer.open_run()
    trainer.lock.release()
    assert "train.resume=auto: no unfinished run to resume; starting a new run in" in capsys.readouterr().out


def test_warm_up_epoch_reports_the_learning_rate_it_trained_with(tmp_path):
    overrides = [
        *TINY,
        "train.epochs=2",
        "optim.warmup_epochs=1",
        "optim.schedule=constant",
        f"train.out_dir={tmp_path}",
    ]
    build_trainer(load_config("smoke", overrides)).fit()
    lrs = [json.loads(line)["lr"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert lrs[0] == pytest.approx(0.1 * 5 / 6) and lrs[1] == pytest.approx(0.1)  # 6 steps an epoch, the last at 5/6


def test_config_dump_shows_what_applies():
    text = dump_config(load_config("cifar10-jpeg"))
    assert "val_size: 0.1\n" in text and "in_memory: true" in text
    assert "val_size: 5000\n" in dump_config(load_config("mnist"))  # a count stays a count
    for key in ("train_size:", "test_size:", "num_classes:", "download:", "verify_md5:"):
        assert f"  {key}" not in text.split("optim:")[0].split("data:")[1], key
    assert "train_size: 1024" in dump_config(load_config("smoke"))


@pytest.mark.slow
def test_smoke_recipe_learns_and_dhm_is_not_worse(tmp_path):
    results = {}
    for mode in ("ce", "dhm"):
        cfg = load_config("smoke", ["train.progress=false", f"loss.mode={mode}", f"train.out_dir={tmp_path / mode}"])
        results[mode] = build_trainer(cfg).fit()["test_acc1"]
    assert results["ce"] >= 90 and results["dhm"] >= 90 and results["dhm"] >= results["ce"] - 1.0


def test_a_run_says_what_it_is_before_its_first_epoch(tmp_path, capsys):
    """The header: the data and its split sizes, the classes, the model with its heads, the method and its step,
    the precision (and why train.amp=auto chose it), threads, device and the CPU's name."""
    from dhm.precision import native_bf16

    cfg = load_config(
        "smoke",
        [*TINY, "train.epochs=1", "train.limit_batches=2", "loss.mode=dml", f"train.out_dir={tmp_path / 'run'}"],
    )
    summary = build_trainer(cfg).fit()
    out = capsys.readouterr().out
    header = out[: out.index("epoch 1/1")]
    assert "data: synthetic (data): train 192 / val 64 / test 64 images; 10 training classes" in header
    assert "model: cifar_resnet20, branches peers:2 (heads main, head1)" in header
    assert "method: dml (step alternating), task classification, 1 epoch\n" in header
    import torch

    precision = "bf16 autocast" if native_bf16(torch.device("cpu")) else "fp32 (train.amp=auto: this device has no"
    run = summary["runtime"]  # and summary.json records it
    assert f"precision: {precision}" in header
    assert f"{run['threads']} CPU thread(s) ({run['threads_why']}); device cpu (" in header
    assert run["device"] == "cpu" and run["precision"].startswith(precision) and run["compile"] == "off"
    assert run["threads"] == torch.get_num_threads()
    assert run["threads_why"] == "OMP_NUM_THREADS" or run["threads_why"].startswith("auto: ")
    assert run["native_bf16"] == native_bf16(torch.device("cpu")) and run["channels_last"] in (True, False)
