"""CS-KD's partners in a forward of their own (``loss.options.partner_forward=separate``, the ``cskd`` default, as its
authors run it): the engine's step against the step written out in float64, and the runs where it is refused."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_cifar

from dhm.config import load_config
from dhm.engine.build import build_loss
from dhm.errors import ConfigError
from dhm.steps import STEPS, make_step

SGD = {"lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4}
T = 4.0


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(4)
    x = torch.randn(8, 3, 32, 32, generator=g, dtype=torch.float64)
    y = torch.randint(0, 10, (4,), generator=g).repeat_interleave(2)  # (anchor, partner) pairs share a class
    return x, y


def _engine_step(kind: str, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    cfg = load_config("smoke", ["loss.mode=cskd"])
    loss_fn = build_loss(cfg, None, num_classes=10).double()
    optimizer = torch.optim.SGD(model.parameters(), **SGD)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    make_step(kind, model, loss_fn, optimizer, scaler, "off", torch.device("cpu"))(x, y)


def test_partners_run_apart_without_gradient_as_the_authors_step():
    torch.manual_seed(0)
    model = tiny_cifar(branches="none").double().train()
    shared, ref = copy.deepcopy(model), copy.deepcopy(model)
    x, y = _batch()

    # The authors' step: the anchors' forward with gradient, then the partners' without; CE on the anchors plus
    # T^2 KL(p_partner || p_anchor) at T = 4, lambda = 1.
    anchor = ref(x[0::2])
    with torch.no_grad():
        partner = ref(x[1::2])
    p = torch.softmax(partner / T, -1)
    kl = (p * (torch.log(p) - torch.log_softmax(anchor / T, -1))).sum(-1).mean()
    loss = F.cross_entropy(anchor, y[0::2]) + T * T * kl
    optimizer = torch.optim.SGD(ref.parameters(), **SGD)
    loss.backward()
    optimizer.step()

    _engine_step("pairs", model, x, y)
    _engine_step("eager", shared, x, y)
    got, want, one = model.state_dict(), ref.state_dict(), shared.state_dict()
    for key in want:  # weights and BatchNorm statistics (each forward's own half of the batch)
        torch.testing.assert_close(got[key], want[key], rtol=1e-10, atol=1e-12, msg=key)
    # one shared forward normalises anchors and partners together: another step
    assert any(not torch.allclose(one[k], want[k]) for k in want if want[k].is_floating_point())


def test_cskd_runs_its_partners_apart_and_the_switch_is_checked():
    assert load_config("smoke", ["loss.mode=cskd"]).loss.options.partner_forward == "separate"
    assert (
        load_config("smoke", ["loss.mode=cskd", "loss.options.partner_forward=shared"]).loss.options.partner_forward
        == "shared"
    )
    pairs = STEPS.get("pairs")
    pairs.check(None, sampler="class_pairs", cuda_graph=False)
    with pytest.raises(ConfigError, match="needs data.sampler=class_pairs"):
        pairs.check(None, sampler="random", cuda_graph=False)
    with pytest.raises(ConfigError, match="not captured in a CUDA graph"):
        pairs.check(None, sampler="class_pairs", cuda_graph=True)
    with pytest.raises(ConfigError, match="loss.options.partner_forward must be shared or separate"):
        load_config("smoke", ["loss.mode=cskd", "loss.options.partner_forward=apart"])
    with pytest.raises(ConfigError, match="loss.mode=cskd needs data.sampler=class_pairs; an override sets"):
        load_config("smoke", ["loss.mode=cskd", "data.sampler=random"])
