"""A run whose output is not a terminal still says what it is doing: progress lines during training epochs and
evaluation (step, images/s, ETA), and a line for slow start-up phases."""

from __future__ import annotations

import re

from dhm.config import load_config
from dhm.engine import build_trainer
from dhm.engine.progress import LogProgress

SMOKE = [
    "train.epochs=1",
    "data.options.train_size=256",
    "data.options.test_size=64",
    "data.val_size=64",
    "data.batch_size=32",
]


def test_progress_lines_when_not_a_terminal(tmp_path, capsys):
    overrides = [*SMOKE, "train.log_every_s=0", "data.eval_batch_size=16", f"train.out_dir={tmp_path}"]
    build_trainer(load_config("smoke", overrides)).fit()
    out = capsys.readouterr().out
    steps = re.findall(r"^  epoch 1 step: (\d+)/6, (\d+) images/s, ETA \d+:\d\d$", out, re.MULTILINE)
    assert [int(s) for s, _ in steps] == [1, 2, 3, 4, 5, 6] and all(int(r) > 0 for _, r in steps)
    validation = re.findall(r"^  validation batch: (\d)/4, \d+ images/s, ETA \d+:\d\d$", out, re.MULTILINE)
    assert validation == ["1", "2", "3"]  # 64 validation images in batches of 16
    assert out.index("epoch 1 step: 6/6") < out.index("epoch 1/1  loss")


def test_progress_lines_are_rate_limited(capsys):
    log = LogProgress("work", 1000, 8, interval=30.0)
    for done in range(1, 1001):
        log.update(done)
    assert capsys.readouterr().out == ""  # a fast loop prints nothing; the epoch line says the rest


def test_quiet_when_progress_is_off(tmp_path, capsys):
    build_trainer(
        load_config("smoke", [*SMOKE, "train.log_every_s=0", "train.progress=false", f"train.out_dir={tmp_path}"])
    ).fit()
    assert "step:" not in capsys.readouterr().out
