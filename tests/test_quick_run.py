"""A user's first short CIFAR-10 run learns: the ``cifar10-jpeg-quick`` recipe on real CIFAR-10 JPEGs (a class-
balanced sample of the bundled tarball: 3,000 training and 1,000 test images), and a shortened paper schedule
keeps its milestones inside the run and says that it may learn nothing."""

from __future__ import annotations

import json
import tarfile
from collections import Counter
from pathlib import Path

import pytest
from conftest import SHARED_DATA

from dhm.cli import main
from dhm.config import load_config

TARBALL = SHARED_DATA / "cifar10-jpeg" / "CIFAR-10-images-jpeg.tar.gz"


@pytest.fixture(scope="module")
def cifar_jpeg(tmp_path_factory) -> Path:
    if not TARBALL.is_file():
        pytest.skip(f"no CIFAR-10 JPEG tarball at {TARBALL}")
    root = tmp_path_factory.mktemp("cifar10-jpeg")
    keep, taken = {"train": 300, "test": 100}, Counter()
    with tarfile.open(TARBALL, "r|gz") as tar:  # streamed: one pass, only the sampled files written
        for member in tar:
            parts = Path(member.name).parts  # CIFAR-10-images/<split>/<class>/<file>.jpg
            if not member.isfile() or len(parts) != 4 or parts[1] not in keep:
                continue
            if taken[parts[1], parts[2]] < keep[parts[1]]:
                taken[parts[1], parts[2]] += 1
                target = root / parts[1] / parts[2] / parts[3]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(tar.extractfile(member).read())
    return root


@pytest.mark.slow
def test_the_quick_recipe_learns_in_two_epochs(cifar_jpeg, tmp_path):
    out = tmp_path / "quick"
    argv = ["train", "cifar10-jpeg-quick", f"data.root={cifar_jpeg}", f"train.out_dir={out}", "train.progress=false"]
    assert main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["epochs"] == 2 and summary["config"]["data"]["train_subset"] == 2000
    assert summary["test_acc1"] > 18.0, summary["test"]  # chance is 10%; measured 24-27% (README: Short runs)


def test_a_shortened_paper_schedule_scales_its_milestones_and_says_so(capsys):
    assert load_config("cifar10-jpeg").optim.milestones == [81, 122]  # the release, untouched at its length
    assert load_config("cifar10-jpeg", ["train.epochs=16"]).optim.milestones == pytest.approx([7.902439, 11.902439])
    assert load_config("cifar10-jpeg", ["train.epochs=16", "optim.milestones=[4]"]).optim.milestones == [4]
    assert main(["train", "cifar10-jpeg", "train.epochs=2", "data.root=/nonexistent"]) == 2
    out = capsys.readouterr().out
    assert "is a 164-epoch schedule; cut to 2 epoch(s) it may learn nothing" in out and "cifar10-jpeg-quick" in out
