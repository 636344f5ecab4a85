"""The bad-input table: every case is one line on stderr, exit code 2 (3 for a diverging run), no traceback, and
nothing written to a run directory that already existed. Run in-process through ``dhm.cli.main``."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import TINY_RUN
from PIL import Image

from dhm.cli import main

TINY = TINY_RUN


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A finished tiny run: its files are the existing run directory every case must leave untouched."""
    folder = tmp_path_factory.mktemp("existing") / "run"
    assert main(["train", "smoke", *TINY, f"train.out_dir={folder}"]) == 0
    return folder


@pytest.fixture(scope="module")
def files(run, tmp_path_factory) -> dict[str, Path]:
    """Broken inputs: an empty file, a text file, checkpoints missing entries, image folders, CIFAR batches."""
    root = tmp_path_factory.mktemp("inputs")
    ckpt = torch.load(run / "last.pt", weights_only=True)
    out = {"empty": root / "empty.pt", "text": root / "notes.pt", "file": root / "a-file"}
    out["empty"].write_bytes(b"")
    out["text"].write_text("not a checkpoint\n")
    out["file"].write_text("")
    for key in ("config", "state"):
        out[f"no-{key}"] = root / f"no-{key}.pt"
        torch.save({k: v for k, v in ckpt.items() if k != key}, out[f"no-{key}"])
    rng = np.random.default_rng(0)
    for name in ("corrupt", "mixed"):
        for split in ("train", "test"):
            for cls in ("a", "b"):
                folder = root / name / split / cls
                folder.mkdir(parents=True)
                for i in range(6):
                    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i}.png")
        out[name] = root / name
    (root / "corrupt" / "train" / "a" / "0.png").write_bytes(b"garbage")
    Image.fromarray(rng.integers(0, 256, (40, 36, 3), dtype=np.uint8)).save(root / "mixed" / "train" / "a" / "0.png")
    cifar = root / "cifar" / "cifar-10-batches-py"
    cifar.mkdir(parents=True)
    for batch in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (4, 3072), dtype=np.uint8)
        (cifar / batch).write_bytes(pickle.dumps({b"data": data, b"labels": [0, 1, -1, 3]}))
    (cifar / "batches.meta").write_bytes(pickle.dumps({"label_names": [f"c{i}" for i in range(10)]}))
    out["cifar"] = root / "cifar"
    (root / "bad.yaml").write_text("model:\n  name: [cifar_resnet20\n")
    out["yaml"] = root / "bad.yaml"
    return out


def _train(*overrides: str) -> list[str]:
    """A tiny smoke run with ``overrides``; one that names another dataset drops the synthetic reader's options
    (given for another reader, they would be refused)."""
    other = any(o.startswith("data.name=") for o in overrides)
    return ["train", "smoke", *(t for t in TINY if not (other and t.startswith("data.options."))), *overrides]


CASES = {
    "batch size 0": (lambda r, f: _train("data.batch_size=0", f"train.out_dir={r}"), "data.batch_size must be >= 1"),
    "negative batch size": (lambda r, f: _train("data.batch_size=-4", f"train.out_dir={r}"), "data.batch_size"),
    "eval batch size 0": (lambda r, f: _train("data.eval_batch_size=0", f"train.out_dir={r}"), "eval_batch_size"),
    "negative lr": (lambda r, f: _train("optim.lr=-0.1", f"train.out_dir={r}"), "optim.lr must be > 0"),
    "nan lr": (lambda r, f: _train("optim.lr=.nan", f"train.out_dir={r}"), "optim.lr must be a finite number"),
    "empty device": (lambda r, f: _train("train.device=", f"train.out_dir={r}"), "train.device must be"),
    "unknown device": (lambda r, f: _train("train.device=foo", f"train.out_dir={r}"), "train.device must be"),
    "one width": (lambda r, f: _train("model.widths=[8]", f"train.out_dir={r}"), "one width per stage"),
    "negative workers": (lambda r, f: _train("data.workers=-1", f"train.out_dir={r}"), "data.workers must be >= 0"),
    "image size 0": (lambda r, f: _train("data.image_size=0", f"train.out_dir={r}"), "data.image_size must be >= 1"),
    "empty key part": (lambda r, f: _train("train..epochs=3"), "has an empty part"),
    "out_dir under /sys": (lambda r, f: _train("train.out_dir=/sys/dhm-run"), "cannot write to run directory"),
    "out_dir is a file": (lambda r, f: _train(f"train.out_dir={f['file']}"), "is a file, not a folder"),
    "another run's out_dir": (lambda r, f: _train(f"train.out_dir={r}"), "already holds a run"),
    "changed data on resume": (
        lambda r, f: _train("data.augment=none", f"train.out_dir={r}", "train.resume=auto"),
        "data.augment",
    ),
    "0-byte checkpoint": (lambda r, f: ["eval", str(f["empty"])], "empty or truncated"),
    "0-byte resume": (lambda r, f: _train(f"train.resume={f['empty']}"), "empty or truncated"),
    "text checkpoint": (lambda r, f: ["eval", str(f["text"])], "not a PyTorch checkpoint"),
    "checkpoint without config": (lambda r, f: ["eval", str(f["no-config"])], "lacks config"),
    "checkpoint without state": (lambda r, f: _train(f"train.resume={f['no-state']}"), "lacks state"),
    "export unwritable": (
        lambda r, f: ["export", str(r / "last.pt"), "--format", "pt", "-o", "/sys/x.pt"],
        "cannot write /sys/x.pt",
    ),
    "export missing checkpoint": (lambda r, f: ["export", str(r / "nope.pt"), "--format", "pt"], "does not exist"),
    "bench batches": (lambda r, f: ["bench", "--batches", "abc"], "--batches takes"),
    "compare seeds 0": (lambda r, f: ["compare", "smoke", "--seeds", "0"], "--seeds must be >= 1"),
    "corrupt image": (
        lambda r, f: _train(
            "data.name=imagefolder", f"data.root={f['corrupt']}", "data.val_size=2", "data.batch_size=4"
        ),
        "cannot read image",
    ),
    "mixed image sizes": (
        lambda r, f: _train("data.name=imagefolder", f"data.root={f['mixed']}", "data.val_size=2", "data.batch_size=4"),
        "mixes image sizes",
    ),
    "negative CIFAR label": (
        lambda r, f: _train(
            "data.name=cifar10",
            f"data.root={f['cifar']}",
            "data.verify_md5=false",
            "data.val_size=2",
            "data.batch_size=4",
        ),
        "label -1 is out of range",
    ),
    "YAML syntax error": (lambda r, f: ["config", str(f["yaml"])], "line 3, column 1"),
    "unknown model library": (lambda r, f: _train("model.name=nosuch:net"), "unknown model library"),
}


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir()}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_and_exit_2(case, run, files, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # default run directories (runs/...) land here, never in the checkout
    argv, expected = CASES[case]
    before = _snapshot(run)
    capsys.readouterr()
    code = main(argv(run, files))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert len(err) == 1 and err[0].startswith("dhm: error: ") and expected in err[0], err
    assert _snapshot(run) == before


def test_scientific_notation_is_a_number_everywhere(capsys):
    assert main(["config", "smoke", "optim.weight_decay=5e-4", "optim.lr=1E-1", "loss.eps=1e-8"]) == 0
    out = capsys.readouterr().out
    assert "weight_decay: 0.0005" in out and "lr: 0.1" in out and "eps: 1.0e-08" in out


def test_diverging_run_stops_with_exit_3_and_keeps_no_bad_checkpoint(tmp_path, capsys):
    folder = tmp_path / "run"
    code = main(_train("optim.lr=1e6", "train.epochs=3", f"train.out_dir={folder}"))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 3 and len(err) == 1
    assert "became non-finite in epoch" in err[0], err
    diverged = int(err[0].split("non-finite in epoch ")[1].split()[0])
    for name in ("last.pt", "best.pt"):
        if (folder / name).exists():
            ckpt = torch.load(folder / name, weights_only=True)
            assert ckpt["state"]["epoch"] < diverged
            assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())
