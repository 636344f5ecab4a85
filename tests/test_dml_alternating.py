"""DML's alternating update (``loss.options.peer_update=alternating``, Zhang et al. 2018, Algorithm 1): the engine's step
against the algorithm written out in float64, and the runs where it is refused."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_cifar
from helpers import TINY_RUN

from dhm.cli import main
from dhm.config import load_config
from dhm.engine.build import build_loss
from dhm.errors import ConfigError
from dhm.steps import STEPS, make_step

SGD = {"lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4}


def _kl(teacher: torch.Tensor, student: torch.Tensor) -> torch.Tensor:
    """mean over the batch of KL(softmax(teacher) || softmax(student)) at T = 1, written out."""
    p = torch.softmax(teacher, -1)
    return (p * (torch.log(p) - torch.log_softmax(student, -1))).sum(-1).mean()


def _batches(steps: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(3)
    return [
        (torch.randn(8, 3, 32, 32, generator=g, dtype=torch.float64), torch.randint(0, 10, (8,), generator=g))
        for _ in range(steps)
    ]


def _engine_steps(kind: str, model: torch.nn.Module, batches) -> None:
    cfg = load_config(
        "smoke", ["loss.mode=dml", f"loss.options.peer_update={'alternating' if kind != 'eager' else 'joint'}"]
    )
    loss_fn = build_loss(cfg, model.head_names, num_classes=10).double()
    loss_fn.set_progress(0.0)
    optimizer = torch.optim.SGD(model.parameters(), **SGD)  # one optimizer over every peer, as the engine's
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    step = make_step(kind, model, loss_fn, optimizer, scaler, "off", torch.device("cpu"))
    for x, y in batches:
        step(x, y)


def _states(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items()}


def test_alternating_update_is_the_papers_algorithm_and_differs_from_the_joint_step():
    torch.manual_seed(0)
    model = tiny_cifar(branches="peers:2").double().train()
    joint, first = copy.deepcopy(model), copy.deepcopy(model)
    peers = [copy.deepcopy(model.backbone), copy.deepcopy(model.branches["head1"])]
    optimizers = [torch.optim.SGD(p.parameters(), **SGD) for p in peers]
    batches = _batches(2)

    # Algorithm 1 for two networks: predictions of both; update 1 against 2's; predict with the updated 1; update 2.
    for x, y in batches:
        z0, z1 = peers[0](x), peers[1](x)
        loss0 = F.cross_entropy(z0, y) + _kl(z1.detach(), z0)
        optimizers[0].zero_grad()
        loss0.backward()
        optimizers[0].step()
        with torch.no_grad():  # the updated first network's prediction (a copy: its own statistics untouched)
            z0_new = copy.deepcopy(peers[0])(x)
        loss1 = F.cross_entropy(z1, y) + _kl(z0_new, z1)
        optimizers[1].zero_grad()
        loss1.backward()
        optimizers[1].step()

    _engine_steps("alternating", model, batches)
    _engine_steps("eager", joint, batches[:1])
    for mine, want in ((model.backbone, peers[0]), (model.branches["head1"], peers[1])):
        got, expected = _states(mine), _states(want)
        assert got.keys() == expected.keys()
        for key in got:
            torch.testing.assert_close(got[key], expected[key], rtol=1e-10, atol=1e-12, msg=key)

    # One joint step moves the first peer as the alternating one does, the second peer differently.
    _engine_steps("alternating", first, batches[:1])
    a, b = _states(first.backbone), _states(joint.backbone)
    assert all(torch.allclose(a[k], b[k], rtol=1e-10, atol=1e-12) for k in a)
    a, b = _states(first.branches["head1"]), _states(joint.branches["head1"])
    assert not all(torch.allclose(a[k], b[k], rtol=1e-10, atol=1e-12) for k in a if a[k].is_floating_point())


def test_alternating_is_refused_where_peers_cannot_step_one_by_one():
    peers, branched = tiny_cifar(branches="peers:2"), tiny_cifar()
    alternating = STEPS.get("alternating")
    alternating.check(peers, distributed=False, accum=1, cuda_graph=False)
    with pytest.raises(ConfigError, match="needs a model of peers"):
        alternating.check(branched, distributed=False, accum=1, cuda_graph=False)  # DHM's branches share the trunk
    with pytest.raises(ConfigError, match="one process with train.accum_steps=1"):
        alternating.check(peers, distributed=False, accum=2, cuda_graph=False)
    with pytest.raises(ConfigError, match="loss.options.peer_update must be joint or alternating"):
        load_config("smoke", ["loss.mode=dml", "loss.options.peer_update=sideways"])


def test_dml_trains_with_the_alternating_update_from_the_command_line(tmp_path, capsys):
    out = tmp_path / "dml"
    argv = [
        "train",
        "smoke",
        *TINY_RUN,
        "loss.mode=dml",
        "loss.options.peer_update=alternating",
        f"train.out_dir={out}",
    ]
    assert main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["loss"]["options"]["peer_update"] == "alternating" and (out / "deploy.pt").is_file()
    capsys.readouterr()
    argv = ["train", "smoke", *TINY_RUN, "loss.options.peer_update=alternating", f"train.out_dir={tmp_path / 'dhm'}"]
    assert main(argv) == 2
    assert "loss.options.peer_update is an option of loss.mode=dml, not of loss.mode=dhm" in capsys.readouterr().err
