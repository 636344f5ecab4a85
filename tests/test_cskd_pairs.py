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


def _batch(seed: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(8, 3, 32, 32, generator=g, dtype=torch.float64)
    y = torch.randint(0, 10, (4,), generator=g).repeat_interleave(2)  # (anchor, partner) pairs share a class
    return x, y


def _engine_steps(kind: str, model: torch.nn.Module, batches) -> None:
    cfg = load_config("smoke", ["loss.mode=cskd"])
    loss_fn = build_loss(cfg, None, num_classes=10).double()
    optimizer = torch.optim.SGD(model.parameters(), **SGD)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    step = make_step(kind, model, loss_fn, optimizer, scaler, "off", torch.device("cpu"))
    for x, y in batches:
        step(x, y)


def test_partners_run_apart_without_gradient_as_the_authors_step():
    """alinlab/cs-kd@b447f25 train.py:95-105 (KDLoss: KLDivLoss(sum) x T^2 / batch) and :130-145: the anchors (the
    batch's first half there, dhm's even places) in a forward with gradient, then the partners in a train-mode
    forward without gradient (their BatchNorm statistics counted too); CE on the anchors + lamda KDLoss, lamda 1,
    T 4. Two SGD steps, every weight and BatchNorm buffer to 1e-10."""
    torch.manual_seed(0)
    model = tiny_cifar(branches="none").double().train()
    shared, ref = copy.deepcopy(model), copy.deepcopy(model)
    batches = [_batch(4), _batch(5)]
    optimizer = torch.optim.SGD(ref.parameters(), **SGD)
    for x, y in batches:
        anchor = ref(x[0::2])
        with torch.no_grad():
            partner = ref(x[1::2])
        kd = F.kl_div(torch.log_softmax(anchor / T, 1), torch.softmax(partner / T, 1), reduction="sum")
        loss = F.cross_entropy(anchor, y[0::2]) + 1.0 * kd * T**2 / anchor.size(0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    _engine_steps("pairs", model, batches)
    _engine_steps("eager", shared, batches)
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
