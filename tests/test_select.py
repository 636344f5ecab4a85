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
