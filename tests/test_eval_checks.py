"""``dhm eval`` measures the run's own splits: an override that would change which images a split holds is refused
(only where the data lives may change), and an evaluation option the run's task does not read is refused."""

from __future__ import annotations

import shutil

import pytest
from conftest import SHARED_DATA
from helpers import TINY_RUN

from dhm.cli import main

PKU = SHARED_DATA / "pku-reid-subset"


def test_eval_refuses_other_splits_and_options_the_task_does_not_read(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "smoke", *TINY_RUN, "loss.mode=ce", f"train.out_dir={out}"]) == 0
    capsys.readouterr()
    assert main(["eval", str(out / "best.pt"), "data.split_seed=3"]) == 2
    err = capsys.readouterr().err
    assert "data.split_seed: " in err and "split its data with 0; evaluating with 3" in err
    assert main(["eval", str(out / "best.pt"), "data.val_size=0.5"]) == 2
    assert main(["eval", str(out / "best.pt"), "--flip"]) == 2
    assert "--flip: the classification task has no such evaluation option" in capsys.readouterr().err
    assert main(["eval", str(out / "best.pt"), "data.eval_batch_size=32"]) == 0  # how it is read may change


@pytest.mark.skipif(not PKU.is_dir(), reason=f"{PKU} is not here")
def test_a_resume_on_other_identities_is_refused(tmp_path, capsys):
    """data.root may move between a run and its resume, but the data behind it must hold the run's classes (here
    identities): a renamed identity folder is refused before anything is trained or written."""
    data = tmp_path / "pku"
    shutil.copytree(PKU, data)
    out = tmp_path / "run"
    common = ["pku-reid", "model.widths=[8,16,32]", "data.options.test_ids=8", "train.limit_batches=2"]
    common += ["train.progress=false", "loss.mode=ce", f"train.out_dir={out}"]
    assert main(["train", *common, f"data.root={data}", "train.epochs=1"]) == 0
    # the header counts the identities the run trains on (66 - 6), not those held out for validation
    assert "images; 60 training identities (6 more held out for validation)" in capsys.readouterr().out
    first = sorted(p.name for p in (data / "train").iterdir())[0]
    (data / "train" / first).rename(data / "train" / "999")
    capsys.readouterr()
    before = (out / "last.pt").read_bytes()
    assert main(["train", *common, f"data.root={data}", "train.epochs=2", "train.resume=auto"]) == 2
    assert "was trained on" in capsys.readouterr().err and (out / "last.pt").read_bytes() == before
