"""Stage plans on any CNN: torchvision and timm families, stages by hand, clear errors, dhm inspect, and the
authors' checkpoints loaded from their key layout with their own reference outputs."""

from __future__ import annotations

import json
import math
import zlib
from pathlib import Path

import pytest
import torch
from conftest import SHARED_DATA
from torch import nn

import dhm
from dhm.branches import SplitError
from dhm.cli import main

OFFICIAL = SHARED_DATA.parent / "fixtures" / "official"

FAST = ["torchvision:resnet18", "timm:resnet18"]  # the default suite's; the rest run under the slow marker
SLOW = [
    "torchvision:mobilenet_v2",
    "timm:efficientnet_b0",
    "torchvision:resnext50_32x4d",
    "torchvision:wide_resnet50_2",
    "torchvision:mobilenet_v3_large",
    "torchvision:efficientnet_b0",
    "torchvision:regnet_y_400mf",
    "torchvision:convnext_tiny",
    "torchvision:densenet121",
    "torchvision:vgg11_bn",
    "timm:resnet50",
    "timm:convnext_nano",
    "timm:regnety_008",
    "timm:mobilenetv3_large_100",
    "timm:densenet121",
]
SIZE = 64  # every family runs at 64x64, which keeps the tests fast


def _family(name: str, request) -> nn.Module:
    library = name.split(":")[0]
    request.getfixturevalue("timm" if library == "timm" else "torchvision")
    torch.manual_seed(0)
    return dhm.create_model(name, num_classes=10, branches="none")


def _check_family(net: nn.Module) -> None:
    plan = dhm.stage_plan(net, input_size=SIZE)
    assert len(plan.stages) >= 3 and all(s.channels > 0 for s in plan.stages)
    assert [s.reduction for s in plan.stages] == sorted(s.reduction for s in plan.stages)
    specs = [dhm.BranchSpec(fork=1), dhm.BranchSpec(fork=2, builder="light")]
    model = dhm.attach_branches(net, specs, num_classes=10, input_size=SIZE).train()
    x = torch.randn(2, 3, SIZE, SIZE)
    torch.manual_seed(1)
    out = model(x)
    torch.manual_seed(1)
    assert torch.equal(out[0], net(x))  # the main head is the model's own forward (stochastic depth included)
    assert len(out) == 3 and all(o.shape == (2, 10) for o in out)
    dhm.MimicLoss()(out, torch.tensor([1, 2]))["loss"].backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), net(x))
    assert dhm.strip(model) is net
    model.train()
    torch._dynamo.reset()
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    torch.manual_seed(1)
    got = compiled(x)
    torch.manual_seed(1)
    want = model(x)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(got, want))


@pytest.mark.parametrize("name", FAST)
def test_branches_on_torchvision_and_timm_models(name, request):
    _check_family(_family(name, request))


@pytest.mark.slow
@pytest.mark.parametrize("name", SLOW)
def test_branches_on_every_sampled_family(name, request):
    _check_family(_family(name, request))


def test_stages_by_hand_depths_and_widths(torchvision):
    net = torchvision.models.mobilenet_v2(num_classes=10)
    plan = dhm.stage_plan(net, stages=["features.3", "features.6", "features.13", "features.18"], input_size=SIZE)
    assert [(s.name, s.channels, s.reduction) for s in plan.stages] == [
        ("features.3", 24, 4),
        ("features.6", 32, 8),
        ("features.13", 96, 16),
        ("features.18", 1280, 32),
    ]
    model = dhm.attach_branches(net, [dhm.BranchSpec(fork="features.6", depths=(6, 5))], plan=plan)
    assert len(model.branches["head1"].stages[0].graph.find_nodes(op="call_module")) == 6
    assert model(torch.randn(2, 3, SIZE, SIZE))[1].shape == (2, 10)
    with pytest.raises(ValueError, match="end at 64 channels, not the stage's 96"):
        dhm.attach_branches(net, [dhm.BranchSpec(fork=1, depths=(3, 1))], plan=plan)
    with pytest.raises(ValueError, match="needs a stage builder"):
        dhm.attach_branches(net, [dhm.BranchSpec(fork=1, width=2.0)], plan=plan)
    with pytest.raises(SplitError, match="'features.99' is called 0 times"):
        dhm.stage_plan(net, stages=["features.99"], input_size=SIZE)


class _LongSkip(nn.Module):
    """A network whose input is used again at the end: no stage boundary exists."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU())
        self.b = nn.Sequential(nn.Conv2d(8, 8, 3, 2, 1), nn.ReLU())
        self.up = nn.Upsample(scale_factor=4)
        self.head = nn.Sequential(nn.Conv2d(11, 4, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten())

    def forward(self, x):
        return self.head(torch.cat([x, self.up(self.b(self.a(x)))], 1))


def test_models_that_cannot_be_split_say_how_to_pass_stages():
    with pytest.raises(SplitError, match="does not know how to split a _LongSkip into stages.*stages=\\["):
        dhm.attach_branches(_LongSkip(), [dhm.BranchSpec(fork=0)])
    with pytest.raises(SplitError, match="skip across it"):
        dhm.stage_plan(_LongSkip(), stages=["a", "b"])
    with pytest.raises(SplitError, match="no 2-D convolution"):
        dhm.stage_plan(nn.Linear(3, 3))


def test_inspect_prints_stages_branches_and_flop_ratio(capsys, torchvision):
    assert main(["inspect", "torchvision:resnet18", "1", "2:light", "--classes", "10", "--input-size", "64"]) == 0
    out = capsys.readouterr().out
    assert "stage plan from torchvision_resnet" in out and "layer4" in out and "512        32" in out
    assert "head2  fork 2, light" in out and "(ratio " in out
    assert main(["inspect", "cifar_resnet32"]) == 0
    assert "(ratio 2.78)" in capsys.readouterr().out  # docs/method.md: the paper layout's FLOP ratio
    assert main(["inspect", "nosuch:model"]) == 2
    assert main(["inspect", "cifar_resnet32", "{fork: 1, depths: [0]}"]) == 2


def test_missing_optional_library_is_one_clear_error(monkeypatch):
    import importlib

    from dhm.models import hubs

    def absent(missing):
        def refuse(name, *a, **k):
            raise ModuleNotFoundError(f"No module named {missing!r}", name=missing)

        return refuse

    monkeypatch.setattr(importlib, "import_module", absent("timm"))
    with pytest.raises(ValueError, match=r"timm models need timm, which is not installed \(pip install timm\)"):
        hubs.timm_model("resnet50")
    monkeypatch.setattr(importlib, "import_module", absent("torchvision"))  # timm present, its dependency not
    with pytest.raises(ValueError, match=r"timm, which is installed but needs torchvision, which is not"):
        hubs.timm_model("resnet50")

    def unloadable(name, *a, **k):
        raise RuntimeError("operator torchvision::nms does not exist")

    monkeypatch.setattr(importlib, "import_module", unloadable)
    with pytest.raises(
        ValueError,
        match=r"torchvision, which is installed.* but cannot be loaded beside torch .*"
        r"RuntimeError: operator torchvision::nms does not exist",
    ):
        hubs.torchvision_model("resnet18")


def _fill(name: str, shape: list[int]) -> torch.Tensor:
    """The fixture README's rule for rebuilding the weights from the key list."""
    g = torch.Generator().manual_seed(zlib.crc32(name.encode()))
    if name.endswith("num_batches_tracked"):
        return torch.zeros(shape, dtype=torch.int64)
    if name.endswith("running_var"):
        return 0.5 + torch.rand(shape, generator=g)
    if name.endswith("running_mean"):
        return 0.1 * torch.randn(shape, generator=g)
    if len(shape) == 1:
        return (
            0.2 + 0.6 * torch.rand(shape, generator=g)
            if name.endswith("weight")
            else 0.1 * torch.randn(shape, generator=g)
        )
    return torch.randn(shape, generator=g) * math.sqrt(1 / math.prod(shape[1:]))


def _official_checkpoint(fixture: dict, path: Path) -> Path:
    state = {f"module.{k}": _fill(k, shape) for k, shape, _ in fixture["keys"]}
    optimizer = {"state": {}, "param_groups": [{"lr": 0.1, "params": list(range(len(state)))}]}
    torch.save(
        {"epoch": 164, "arch": fixture["arch"], "state_dict": state, "best_prec1": 0.0, "optimizer": optimizer}, path
    )
    return path


def _arch_params() -> list:
    """Every fixture architecture; the slowest to build (WRN-28-10) under the slow marker."""
    names = sorted(p.stem for p in OFFICIAL.glob("*.json")) or ["missing"]
    return [pytest.param(n, marks=pytest.mark.slow) if n == "wrn28_10" else n for n in names]


@pytest.mark.parametrize("arch", _arch_params())
def test_authors_checkpoints_give_their_own_outputs(arch, tmp_path):
    if arch == "missing":
        pytest.skip(f"no fixtures at {OFFICIAL}")
    fixture = json.loads((OFFICIAL / f"{arch}.json").read_text())
    path = _official_checkpoint(fixture, tmp_path / f"{arch}.pth.tar")
    model = dhm.load_official(path, fixture["dhm_model"])
    x = torch.randn(fixture["input"]["shape"], generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        heads = model.forward_heads(x)
    assert len(heads) == len(fixture["outputs_eval"])
    for got, want in zip(heads, fixture["outputs_eval"]):
        want = torch.tensor(want)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * want.abs().max().item())


def test_import_official_then_export_loads_into_torchvision(tmp_path, torchvision, capsys):
    fixture = json.loads((OFFICIAL / "resnet18.json").read_text())
    source = _official_checkpoint(fixture, tmp_path / "resnet18_dhm.pth.tar")
    assert main(["import-official", str(source), "--model", "resnet18", "-o", str(tmp_path / "r18.pt")]) == 0
    assert main(["export", str(tmp_path / "r18.pt"), "--format", "pt", "-o", str(tmp_path / "plain.pt")]) == 0
    plain = torchvision.models.resnet18()
    plain.load_state_dict(torch.load(tmp_path / "plain.pt", weights_only=True)["state_dict"], strict=True)
    x = torch.randn(fixture["input"]["shape"], generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(plain.eval()(x), torch.tensor(fixture["outputs_eval"][0]), rtol=1e-5, atol=1e-4)
    capsys.readouterr()
    assert main(["import-official", str(source), "--model", "resnet50"]) == 2
    assert "another architecture" in capsys.readouterr().err
    (tmp_path / "text.pth").write_text("not a checkpoint")
    assert main(["import-official", str(tmp_path / "text.pth"), "--model", "resnet18"]) == 2
    assert "not a PyTorch checkpoint" in capsys.readouterr().err


def test_authors_checkpoint_reader_never_runs_code(tmp_path):
    import pickle

    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    evil = tmp_path / "evil.pth.tar"
    evil.write_bytes(pickle.dumps({"state_dict": {"fc.weight": Payload()}}, protocol=2))
    with pytest.raises(dhm.errors.CheckpointError, match="could run code"):
        dhm.load_official(evil, "resnet18")
    assert not marker.exists()


def test_engine_trains_a_torchvision_model_named_in_the_config(torchvision, tmp_path):
    from dhm.config import load_config
    from dhm.engine import train

    cfg = load_config(
        "smoke",
        [
            "model.name=torchvision:mobilenet_v2",
            "model.widths=null",
            "model.branches=[{fork: features.6}, {fork: 2, builder: light}]",
            "train.epochs=1",
            "data.options.train_size=64",
            "data.options.test_size=32",
            "data.val_size=16",
            "data.batch_size=16",
            "train.progress=false",
            f"train.out_dir={tmp_path / 'run'}",
        ],
    )
    summary = train(cfg)
    assert {"acc1/main", "acc1/head1", "acc1/head2"} <= set(summary["test"])
    deployed = torch.load(tmp_path / "run" / "deploy.pt", weights_only=True)
    assert deployed["model"]["name"] == "torchvision:mobilenet_v2"
    torchvision.models.mobilenet_v2(num_classes=10).load_state_dict(deployed["state_dict"], strict=True)


class _ThreeStage(nn.Module):
    """The simplest own CNN: a stem and three named stages at strides 1, 2, 2 (two resolution drops)."""

    def __init__(self) -> None:
        super().__init__()

        def block(i: int, o: int, s: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(i, o, 3, s, 1, bias=False), nn.BatchNorm2d(o), nn.ReLU())

        self.stem = block(3, 16, 1)
        self.stage1 = nn.Sequential(block(16, 16, 1), block(16, 16, 1))
        self.stage2 = nn.Sequential(block(16, 32, 2), block(32, 32, 1))
        self.stage3 = nn.Sequential(block(32, 64, 2), block(64, 64, 1))
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage3(self.stage2(self.stage1(self.stem(x))))
        return self.fc(x.mean((2, 3)))


def test_a_plain_three_stage_cnn_splits_at_its_named_stages():
    plan = dhm.stage_plan(_ThreeStage(), input_size=32)
    described = plan.describe()
    assert [s["module"].split(".")[0] for s in described] == ["stage1", "stage2", "stage3"]
    assert [s["reduction"] for s in described] == [1, 2, 4] and [s["channels"] for s in described] == [16, 32, 64]
    model = dhm.attach_branches(_ThreeStage(), [dhm.BranchSpec(fork=0), dhm.BranchSpec(fork=1)])
    out = model.train()(torch.randn(2, 3, 32, 32))
    assert len(out) == 3 and all(o.shape == (2, 10) for o in out)
    torch.testing.assert_close(
        dhm.strip(model).eval()(torch.ones(1, 3, 32, 32)), model.eval()(torch.ones(1, 3, 32, 32))
    )


def test_a_stage_plan_reads_as_its_stages():
    text = repr(dhm.stage_plan(_ThreeStage(), input_size=32))
    assert text.startswith("StagePlan(source=") and "stage3.1.2 (64 ch, /4, 6 blocks)" in text and "0x" not in text


def test_inspect_takes_a_named_layout_as_model_branches_does(capsys):
    from dhm.cli import main

    assert main(["inspect", "cifar_resnet20", "peers:2"]) == 0
    out = capsys.readouterr().out
    assert "head1  fork 'input', peer" in out and "ratio 2.00" in out
    assert main(["inspect", "cifar_resnet20", "linear-every-stage:32"]) == 0
    assert "head2" in capsys.readouterr().out
