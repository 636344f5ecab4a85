"""DML's alternating updates (Zhang et al. 2018): the authors' (``loss.options.peer_update=alternating``, the
default: each peer steps on a mini-batch of its own) against their TensorFlow code written out in float64, the
paper's Algorithm 1 on one batch (``alternating-one-batch``), and the runs where they are refused."""

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


def _engine_steps(kind: str, model: torch.nn.Module, batches, extra: tuple[str, ...] = ("loss.eps=0",)) -> None:
    update = "joint" if kind == "eager" else kind
    cfg = load_config("smoke", ["loss.mode=dml", f"loss.options.peer_update={update}", *extra])
    loss_fn = build_loss(cfg, model.head_names, num_classes=10).double()
    loss_fn.set_progress(0.0)
    optimizer = torch.optim.SGD(model.parameters(), **SGD)  # one optimizer over every peer, as the engine's
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    step = make_step(kind, model, loss_fn, optimizer, scaler, "off", torch.device("cpu"))
    for x, y in batches:
        step(x, y)


def _states(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items()}


def _authors_kl(logits1: torch.Tensor, logits2: torch.Tensor) -> torch.Tensor:
    """``kl_loss_compute(logits1, logits2)`` of YingZhangDUT/Deep-Mutual-Learning@34a2058 train_models.py:60-67:
    mean_b sum_c p2 log(1e-8 + p2 / (p1 + 1e-8)), network 1 the student, network 2 its teacher."""
    pred1, pred2 = torch.softmax(logits1, 1), torch.softmax(logits2, 1)
    return (pred2 * torch.log(1e-8 + pred2 / (pred1 + 1e-8))).sum(1).mean()


@pytest.mark.parametrize("count", [2, 3])
def test_alternating_update_is_the_authors_code(count):
    """The authors' loop (train_models.py:70-114 and :310-316): for each step, for each network i, one
    ``sess.run(train_op_i)`` on a batch of its own (each run dequeues one); network i's loss is its cross-entropy
    plus the sum over every other network j of kl_loss_compute(z_i, z_j) (summed, not averaged, for K >= 3), the
    gradient taken for network i's variables only, the others' predictions from the same run (train-mode batch
    statistics, their moving averages not updated: only network i's update ops run). dhm's step gets the K batches
    as one batch of K chunks. Two steps, every weight and BatchNorm buffer to 1e-10."""
    torch.manual_seed(0)
    model = tiny_cifar(branches=f"peers:{count}").double().train()
    peers = [copy.deepcopy(model.backbone), *(copy.deepcopy(b) for b in model.branches.values())]
    optimizers = [torch.optim.SGD(p.parameters(), **SGD) for p in peers]
    g = torch.Generator().manual_seed(5)

    def batch():
        return torch.randn(4, 3, 32, 32, generator=g, dtype=torch.float64), torch.randint(0, 10, (4,), generator=g)

    steps = [[batch() for _ in range(count)] for _ in range(2)]  # per step, one batch per network
    for batches in steps:
        for i, (x, y) in enumerate(batches):
            own = peers[i](x)
            loss = F.cross_entropy(own, y)
            for j, other in enumerate(peers):
                if j != i:
                    saved = copy.deepcopy(other.state_dict())
                    with torch.no_grad():
                        teacher = other(x)
                    other.load_state_dict(saved)  # its moving averages untouched
                    loss = loss + _authors_kl(own, teacher)
            optimizers[i].zero_grad()
            loss.backward()
            optimizers[i].step()
    joined = [(torch.cat([x for x, _ in b]), torch.cat([y for _, y in b])) for b in steps]
    _engine_steps("alternating", model, joined, extra=())  # the method's defaults: eps 1e-8, kl_reduce sum
    mine = [model.backbone, *model.branches.values()]
    for got_net, want_net in zip(mine, peers):
        got, expected = _states(got_net), _states(want_net)
        for key in got:
            torch.testing.assert_close(got[key], expected[key], rtol=1e-10, atol=1e-12, msg=key)


def test_one_batch_alternating_update_is_the_papers_algorithm_and_differs_from_the_joint_step():
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

    _engine_steps("alternating-one-batch", model, batches)
    _engine_steps("eager", joint, batches[:1])
    for mine, want in ((model.backbone, peers[0]), (model.branches["head1"], peers[1])):
        got, expected = _states(mine), _states(want)
        assert got.keys() == expected.keys()
        for key in got:
            torch.testing.assert_close(got[key], expected[key], rtol=1e-10, atol=1e-12, msg=key)

    # One joint step moves the first peer as the alternating one does, the second peer differently.
    _engine_steps("alternating-one-batch", first, batches[:1])
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
    with pytest.raises(ConfigError, match="needs a model of peers"):
        STEPS.get("alternating-one-batch").check(branched, distributed=False, accum=1, cuda_graph=False)
    with pytest.raises(ConfigError, match=r"data.batch_size \(9\) must be a multiple of 2"):
        alternating.check(peers, distributed=False, accum=1, cuda_graph=False, batch_size=9)
    with pytest.raises(ConfigError, match="loss.options.peer_update must be alternating or alternating-one-batch"):
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
