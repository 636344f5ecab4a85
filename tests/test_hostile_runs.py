"""Hostile input against the newer features, part 2: the authors' checkpoints (``dhm import-official``), a killed
``dhm compare --jobs N`` (its children die with it and a rerun resumes them), and a user's own loaders in
``dhm.fit`` (one DataError naming the loader, the batch and what was expected)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import COMPARE_TINY
from PIL import Image
from test_plans import OFFICIAL, _official_checkpoint
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import dhm
import dhm.predict
from dhm.cli import main
from dhm.errors import DataError


@pytest.fixture(scope="module")
def authors(tmp_path_factory) -> dict[str, Path]:
    if not (OFFICIAL / "cifar_resnet32.json").is_file():
        pytest.skip(f"no fixtures at {OFFICIAL}")
    root = tmp_path_factory.mktemp("authors")
    fixture = json.loads((OFFICIAL / "cifar_resnet32.json").read_text())
    good = _official_checkpoint(fixture, root / "resnet32_dhm.pth.tar")
    obj = torch.load(good, weights_only=True)
    state = obj["state_dict"]
    variants = {
        "int-keys": {i: v for i, v in enumerate(state.values())},
        "rank": {**state, "module.fc.weight": state["module.fc.weight"].flatten()},
        "int-dtype": {**state, "module.conv1.weight": state["module.conv1.weight"].to(torch.int32)},
        "nan": {**state, "module.conv1.weight": state["module.conv1.weight"] * float("nan")},
    }
    out = {"good": good}
    for name, variant in variants.items():
        torch.save({**obj, "state_dict": variant}, root / f"{name}.pth.tar")
        out[name] = root / f"{name}.pth.tar"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(root / "img.png")
    out["img"] = root / "img.png"
    return out


def _import(key: str, *extra: str):
    return lambda f, out: ["import-official", str(f[key]), "--model", "cifar_resnet32", "-o", str(out), *extra]


IMPORT_CASES = {
    "keys that are not strings": (_import("int-keys"), "keys must be parameter names"),
    "fc.weight of the wrong rank": (_import("rank"), "has no fc.weight matrix"),
    "an integer weight": (_import("int-dtype"), "has dtype torch.int32"),
    "NaN weights": (_import("nan"), "holds NaN or infinite values"),
    "--classes 0": (_import("good", "--classes", "0"), "--classes must be >= 1"),
    "--mean of the wrong length": (_import("good", "--mean", "0.5,0.5"), "mean must be 3 finite number(s)"),
    "--std zero": (_import("good", "--std", "0,0,0"), "std must be positive"),
    "--mean not numbers": (_import("good", "--mean", "a,b,c"), "--mean takes comma-separated numbers"),
    "a library that cannot be imported": (
        lambda f, out: ["import-official", str(f["good"]), "--model", "torchvision:resnet18", "-o", str(out)],
        "cannot build torchvision:resnet18: torchvision models need torchvision",
    ),
}


@pytest.mark.parametrize("case", list(IMPORT_CASES))
def test_bad_authors_checkpoints_are_one_line(case, authors, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torchvision", None)  # as where torchvision is absent
    argv, expected = IMPORT_CASES[case]
    capsys.readouterr()
    code = main(argv(authors, tmp_path / "out.pt"))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("dhm: error: ") and expected in err[0], err
    assert not (tmp_path / "out.pt").exists()


def test_an_imported_checkpoint_predicts_with_the_authors_normalisation(authors, tmp_path, capsys):
    out = tmp_path / "r32.pt"
    assert main(["import-official", str(authors["good"]), "--model", "cifar_resnet32", "-o", str(out)]) == 0
    deployed = dhm.predict.load_deployed(out)
    assert deployed.mean == pytest.approx([0.4914, 0.4822, 0.4465]) and deployed.input_size == [3, 32, 32]
    capsys.readouterr()
    assert main(["predict", str(out), str(authors["img"]), "--top-k", "2"]) == 0
    assert "%" in capsys.readouterr().out
    own = tmp_path / "own.pt"
    argv = ["import-official", str(authors["good"]), "--model", "cifar_resnet32", "-o", str(own)]
    assert main([*argv, "--mean", "0.5,0.5,0.5", "--std", "0.25,0.25,0.25"]) == 0
    assert dhm.predict.load_deployed(own).std == [0.25, 0.25, 0.25]
    capsys.readouterr()
    assert main(["eval", str(out)]) == 2  # no run config: the data to evaluate on must be named
    assert "name the data to evaluate on, e.g. dhm eval FILE data.name=" in capsys.readouterr().err


@pytest.mark.slow
def test_killing_compare_kills_its_runs_and_a_rerun_resumes_them(tmp_path):
    root = tmp_path / "cmp"
    argv = [sys.executable, "-m", "dhm", "compare", "smoke", "--seeds", "2", "--jobs", "2", "--modes", "ce"]
    argv += ["--out", str(root), *COMPARE_TINY, "train.epochs=12"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    parent = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    logs = [root / "ce" / f"seed{s}" / "train.log" for s in (0, 1)]
    deadline = time.time() + 120
    while time.time() < deadline and not all(p.is_file() and "epoch 2/" in p.read_text() for p in logs):
        time.sleep(0.5)
    children = [
        int(p) for p in subprocess.run(["pgrep", "-P", str(parent.pid)], capture_output=True, text=True).stdout.split()
    ]
    assert len(children) == 2, "both runs should be training"
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    deadline = time.time() + 30
    while time.time() < deadline and any(_alive(c) for c in children):
        time.sleep(0.2)
    assert not any(_alive(c) for c in children), "a training run outlived its compare"
    rerun = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert rerun.returncode == 0, rerun.stdout[-2000:] + rerun.stderr[-2000:]
    for log in logs:
        assert "resumed from" in log.read_text()


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


class _Later(DataLoader):
    """A loader that yields nothing from its second pass on (its length still says 2)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.passes = 0

    def __iter__(self):
        self.passes += 1
        return super().__iter__() if self.passes == 1 else iter(())


def _loader(labels, images=None, n=16, cls=DataLoader) -> DataLoader:
    images = images if images is not None else torch.randn(n, 3, 32, 32)
    return cls(TensorDataset(images, labels), batch_size=8)


FIT_CASES = {
    "label out of range": (lambda: _loader(torch.full((16,), 10)), "train loader's batch 1: label 10 is out of range"),
    "negative label": (lambda: _loader(torch.full((16,), -1)), "label -1 is out of range for a model with 10"),
    "float labels": (lambda: _loader(torch.zeros(16)), "labels must be integer class indices"),
    "label count": (
        lambda: DataLoader([(torch.randn(4, 3, 32, 32), torch.zeros(3, dtype=torch.int64))] * 2, batch_size=None),
        "expected images (N, C, H, W) and N labels",
    ),
    "images the model cannot take": (
        lambda: _loader(torch.zeros(16, dtype=torch.int64), torch.randn(16, 1, 32, 32)),
        "the model cannot take images of shape (1, 32, 32)",
    ),
    "empty in a later epoch": (
        lambda: _loader(torch.zeros(16, dtype=torch.int64), cls=_Later),
        "the train loader yielded no batches",
    ),
}


@pytest.mark.parametrize("case", list(FIT_CASES))
def test_fit_names_the_loader_and_batch_of_bad_data(case, tmp_path):
    make, expected = FIT_CASES[case]
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10)
    )
    settings = {"train.epochs": 2, "train.progress": False, "loss.mode": "ce"}
    with pytest.raises(DataError) as info:
        dhm.fit(net, make(), out_dir=tmp_path / "run", settings=settings)
    assert expected in str(info.value) and "\n" not in str(info.value)


def test_ctrl_c_says_what_was_kept(tmp_path, monkeypatch, capsys):
    from helpers import TINY_RUN

    from dhm.engine.trainer import Trainer

    calls = []

    def interrupted(self, model, epoch):
        calls.append(epoch)
        if len(calls) == 1 and self.cfg.train.epochs == 1 or len(calls) == 2:
            raise KeyboardInterrupt
        return original(self, model, epoch)

    original = Trainer.train_one_epoch
    monkeypatch.setattr(Trainer, "train_one_epoch", interrupted)
    capsys.readouterr()
    assert main(["train", "smoke", *TINY_RUN, f"train.out_dir={tmp_path / 'a'}"]) == 130
    assert "no epoch had finished" in capsys.readouterr().err  # nothing to resume: not "last.pt keeps ..."
    calls.clear()
    assert main(["train", "smoke", *TINY_RUN, "train.epochs=3", f"train.out_dir={tmp_path / 'b'}"]) == 130
    assert "last.pt keeps epoch 1 (train.resume=auto continues it)" in capsys.readouterr().err


def test_a_changed_resume_is_refused_before_the_data_is_read(tmp_path, capsys):
    from helpers import TINY_RUN

    folder = tmp_path / "run"
    assert main(["train", "smoke", *TINY_RUN, f"train.out_dir={folder}"]) == 0
    capsys.readouterr()
    tiny = [t for t in TINY_RUN if not t.startswith("data.options.")]  # the synthetic reader's, not imagefolder's
    argv = ["train", "smoke", *tiny, f"train.out_dir={folder}", "train.resume=auto", "optim.lr=0.5"]
    assert main([*argv, "data.name=imagefolder", "data.root=/nonexistent"]) == 2
    err = capsys.readouterr().err
    assert "optim.lr" in err and "/nonexistent" not in err  # the settings, not the (unread) data, are named


def test_deployment_only_formats_say_so(tmp_path, capsys):
    from helpers import TINY_RUN

    folder = tmp_path / "run"
    assert main(["train", "smoke", *TINY_RUN, f"train.out_dir={folder}"]) == 0
    assert main(["export", str(folder / "deploy.pt"), "--format", "torchscript", "-o", str(tmp_path / "m.ts")]) == 0
    (tmp_path / "m.onnx").write_bytes(b"\x08\x07")  # the suffix decides: ONNX files are never unpickled
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "m.ts")]) == 2
    assert "a TorchScript export, a deployment-only format" in capsys.readouterr().err
    assert main(["predict", str(tmp_path / "m.onnx"), str(tmp_path)]) == 2
    assert "an ONNX export, a deployment-only format (run it with onnxruntime)" in capsys.readouterr().err
    assert main(["eval", str(folder / "deploy.pt"), "--heads"]) == 0
    assert "holds the deployed backbone only" in capsys.readouterr().out
