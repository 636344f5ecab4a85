"""``train.select`` names the validation metric that picks best.pt: one the task never reports for the model's heads
is refused before training (it used to fall back silently to "the last epoch is best")."""

from __future__ import annotations

import json

from helpers import TINY_RUN

from dhm.cli import main


def test_an_unreported_selection_metric_is_refused_before_training(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "smoke", *TINY_RUN, "train.select=acc1/head9", f"train.out_dir={out}"]) == 2
    err = capsys.readouterr().err
    assert "train.select=acc1/head9: the classification task reports" in err and "did you mean acc1/head" in err
    assert not (out / "last.pt").exists()
    assert main(["train", "smoke", *TINY_RUN, "train.select=mAP/main", f"train.out_dir={tmp_path / 'map'}"]) == 2
    assert "train.select=mAP/main" in capsys.readouterr().err


def test_a_reported_selection_metric_picks_best_pt(tmp_path):
    out = tmp_path / "run"
    assert main(["train", "smoke", *TINY_RUN, "train.select=acc1/head1", f"train.out_dir={out}"]) == 0
    assert json.loads((out / "summary.json").read_text())["select"] == "val/acc1/head1"


def test_select_last_keeps_the_last_epoch_and_still_records_validation(tmp_path):
    """train.select=last: best.pt is the last epoch whatever validation says, and validation is still recorded."""
    import torch

    from dhm.config import load_config
    from dhm.engine import build_trainer
    from dhm.engine.checkpoint import FORMAT, load_file

    out = tmp_path / "run"
    cfg = load_config("smoke", [*TINY_RUN, "train.epochs=3", "train.select=last", f"train.out_dir={out}"])
    summary = build_trainer(cfg).fit()
    assert summary["best_epoch"] == 3 and summary["select"] == "last epoch"
    assert summary["test"] == summary["test_last"] and summary["val_best"]  # the last epoch's validation
    best, last = load_file(out / "best.pt", FORMAT), load_file(out / "last.pt", FORMAT)
    assert all(torch.equal(best["model"][k], last["model"][k]) for k in last["model"])
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert all("val/acc1/main" in r for r in records)
