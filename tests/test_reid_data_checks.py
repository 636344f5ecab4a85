"""Re-ID data that cannot train or be evaluated is refused when the data is built, in one line and before the first
step (it used to fail after the last epoch, as a traceback, losing the run's evaluation and summary)."""

from __future__ import annotations

import shutil

import pytest
import torch
from conftest import SHARED_DATA

from dhm.cli import main
from dhm.data.reid import _parse
from dhm.data.sources import TensorSource
from dhm.errors import DataError
from dhm.tasks.retrieval_checks import check_retrieval_splits

PKU = SHARED_DATA / "pku-reid-subset"


def _source(ids, cams, roles=None, labels=None) -> TensorSource:
    ids = torch.tensor(ids)
    meta = {"identity": ids, "camera": torch.tensor(cams)}
    if roles is not None:
        meta["role"] = torch.tensor(roles)
    return TensorSource(torch.zeros(len(ids), 3, 4, 4, dtype=torch.uint8), torch.tensor(labels or ids.tolist()), meta)


TRAIN = _source([10, 10, 11, 11], [0, 1, 0, 1], labels=[0, 0, 1, 1])
GOOD = _source([20, 20, 21, 21], [0, 1, 0, 1], roles=[0, 1, 0, 1])


@pytest.mark.parametrize(
    ("train", "test", "message"),
    [
        (TRAIN, _source([], []), "the test split holds no image"),
        (TRAIN, _source([20, 20], [0, 1], roles=[1, 1]), "the test split has no query image"),
        (TRAIN, _source([20, 20], [0, 1], roles=[0, 0]), "the test split has no gallery image"),
        (TRAIN, _source([20, 20, 21], [0, 0, 1], roles=[0, 1, 1]), "no test query has an image of its identity"),
        (TRAIN, _source([20, 20], [0, 1]), None),  # all against all: one identity seen by two cameras is enough
        (TRAIN, _source([10, 10, 21, 21], [0, 1, 0, 1], roles=[0, 1, 0, 1]), "1 test identities are also training"),
        (_source([10, 11], [0, 1], labels=[0, 1]), GOOD, "no training identity has two images"),
        (_source([10, 10], [0, 1], labels=[0, 0]), GOOD, "fewer than 2 identities"),
        (_source([], [], labels=[]), GOOD, "the training split holds no image"),
    ],
)
def test_data_that_cannot_train_or_be_evaluated_is_refused(train, test, message):
    if message is None:
        check_retrieval_splits(train, {"val": None, "test": test})
        return
    with pytest.raises(DataError, match=message):
        check_retrieval_splits(train, {"val": None, "test": test})


def test_validation_sharing_training_identities_is_refused_with_the_fix_named():
    with pytest.raises(DataError, match="data.val_by=identity"):
        check_retrieval_splits(TRAIN, {"val": _source([10, 10], [0, 1]), "test": GOOD})
    check_retrieval_splits(TRAIN, {"val": None, "test": _source([10, 10, 11], [0, 1, 1], roles=[0, 1, 1])}, True)


def test_malformed_and_unbounded_names_are_data_errors(tmp_path):
    for name, words in (
        ("-_c1s1_000.jpg", "'-' is not a number"),
        ("99999999999_c1s1_000.jpg", "out of range"),
        ("0002_c0s1_000.jpg", "cameras >= 1"),
    ):
        with pytest.raises(DataError, match=words):
            _parse([tmp_path / name])


@pytest.mark.skipif(not PKU.is_dir(), reason=f"{PKU} is not here")
def test_a_test_split_without_cross_camera_matches_stops_before_training(tmp_path, capsys):
    """Every PKU image given camera 0 (a pattern matching the first 0 of the name): no query can be matched from
    another camera, so the run stops when the data is built, one line, exit 2, no checkpoint."""
    out = tmp_path / "run"
    argv = ["train", "pku-reid", f"data.root={PKU}", "train.progress=false", f"train.out_dir={out}"]
    assert main([*argv, "data.options.camera_pattern=(0)"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nothing to rank" in err[0] and not (out / "last.pt").exists()
    assert main([*argv, "data.options.camera_pattern=^\\d+_"]) == 2  # no group: nothing names the camera
    assert "has no group" in capsys.readouterr().err
    data = tmp_path / "pku"
    shutil.copytree(PKU / "train", data / "train")
    for identity in sorted((data / "train").iterdir()):  # one image per identity
        for extra in sorted(identity.iterdir())[1:]:
            extra.unlink()
    argv = ["train", "pku-reid", f"data.root={data}", "data.options.folders=[train]", f"train.out_dir={out}"]
    assert main([*argv, "train.progress=false"]) == 2
    assert "no training identity has two images" in capsys.readouterr().err


def test_negative_supervision_and_embedding_weights_are_refused():
    from dhm.config import load_config
    from dhm.errors import ConfigError

    for override, words in (
        ("loss.supervision.margin=-0.1", "loss.supervision.margin must be >= 0"),
        ("loss.supervision.triplet_weight=-1", "loss.supervision.triplet_weight must be >= 0"),
        ("loss.supervision.center_lr=0", "loss.supervision.center_lr must be > 0"),
        ("loss.options.embed_weight=-2", "loss.options.embed_weight must be >= 0"),
    ):
        mode = ["loss.mode=dhm-emb"] if "embed" in override else []
        with pytest.raises(ConfigError, match=words):
            load_config("pku-reid", [*mode, override])
