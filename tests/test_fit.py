"""``dhm.fit``: a user's own model and DataLoaders through the engine (run files, resume, deploy weights)."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import dhm
from dhm.config.schema import DataConfig
from dhm.data import build_dataset
from dhm.deployed import load_plain
from dhm.errors import CheckpointError, ConfigError

FAST = {"train.progress": "false", "optim.lr": 0.05, "train.threads": 1}


def _net() -> nn.Module:
    """A user's own CNN: three stages of plain modules, no dhm base class."""
    torch.manual_seed(0)

    def stage(cin: int, cout: int, stride: int) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())

    return nn.Sequential(
        stage(1, 8, 1), stage(8, 16, 2), stage(16, 32, 2), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10)
    )


def _loaders() -> tuple[DataLoader, DataLoader, DataLoader]:
    """scikit-learn's real handwritten digits (16x16), split 1,000 / 437 / 360, as plain DataLoaders."""
    bundle = build_dataset(DataConfig(name="digits", image_size=16))
    x, y = (bundle.train.images.float() / 255 - 0.5) / 0.5, bundle.train.labels
    test = TensorDataset((bundle.test.images.float() / 255 - 0.5) / 0.5, bundle.test.labels)
    return (
        DataLoader(TensorDataset(x[:1000], y[:1000]), batch_size=100, shuffle=True),
        DataLoader(TensorDataset(x[1000:], y[1000:]), batch_size=250),
        DataLoader(test, batch_size=250),
    )


def _model() -> dhm.DHMModel:
    return dhm.attach_branches(_net(), [dhm.BranchSpec(fork="1")], stages=["0", "1", "2"])


def test_fit_trains_own_model_and_loaders_into_a_complete_run(tmp_path):
    train, val, test = _loaders()
    model = _model()
    summary = dhm.fit(model, train, val, test, out_dir=tmp_path, settings={**FAST, "train.epochs": 8})
    for name in ("config.yaml", "metrics.jsonl", "metrics.csv", "last.pt", "best.pt", "deploy.pt", "summary.json"):
        assert (tmp_path / name).is_file(), name
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == list(range(1, 9)) and "val/acc1/head1" in rows[0]
    assert summary["test_acc1"] > 60, summary["test_acc1"]  # it learned the digits (chance: 10%)
    assert json.loads((tmp_path / "summary.json").read_text())["test_acc1"] == summary["test_acc1"]
    # the deploy file holds the plain network's weights: they load into the user's own class strictly
    net = _net()
    net.load_state_dict(torch.load(tmp_path / "deploy.pt", weights_only=True)["state_dict"])
    x, _ = next(iter(test))
    torch.testing.assert_close(net.eval()(x), dhm.strip(model).eval()(x))
    with pytest.raises(CheckpointError, match="your own model"):
        load_plain(tmp_path / "deploy.pt")


def test_fit_resume_continues_exactly(tmp_path):
    train, val, test = _loaders()
    settings = {**FAST, "train.epochs": 3, "train.deterministic": "true"}
    whole = _model()
    dhm.fit(whole, train, val, test, out_dir=tmp_path / "whole", settings=settings)
    part = _model()
    dhm.fit(part, train, val, test, out_dir=tmp_path / "part", settings={**settings, "train.epochs": 2})
    resumed = _model()
    summary = dhm.fit(
        resumed, train, val, test, out_dir=tmp_path / "part", settings={**settings, "train.resume": "auto"}
    )
    assert summary["epochs"] == 3
    for a, b in zip(whole.state_dict().values(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    metrics = (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()
    assert len(metrics) == 3


def test_fit_plain_model_needs_ce(tmp_path):
    train, val, _ = _loaders()
    with pytest.raises(ConfigError, match="attach_branches"):
        dhm.fit(_net(), train, val, out_dir=tmp_path, settings={**FAST, "loss.mode": "dhm"})
    summary = dhm.fit(_net(), train, out_dir=tmp_path / "ce", settings={**FAST, "train.epochs": 1})
    assert summary["test_acc1"] is None and summary["best_epoch"] == 1  # no test loader, no validation


def test_the_readme_fit_example_runs_as_written_offline(tmp_path, monkeypatch, capsys):
    """README.md's dhm.fit example (between its fit-example markers), executed as a user would paste it: no
    download, no torchvision; it learns the digits."""
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = text.split("<!-- fit-example -->")[1].split("<!-- /fit-example -->")[0]
    code = block.split("```python")[1].split("```")[0]
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})  # noqa: S102 - the README's own code, as a user runs it
    accuracy = float(capsys.readouterr().out.strip().splitlines()[-1])
    assert accuracy > 80, accuracy  # chance is 10%
    assert (tmp_path / "runs" / "mine" / "deploy.pt").is_file()
