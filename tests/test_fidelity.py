"""Methods as their authors wrote them, in float64: each reference is written in this file from the authors'
released code (cited: repository@commit:file:lines); dhm's loss, built as a run builds it from a resolved config at
the method's defaults, equals it in value and gradient to 1e-10 on logits of std 1, 3 and 10."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dhm.config import load_config
from dhm.engine.build import build_loss

B, C = 6, 5


def _logits(heads: int, std: float, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [(std * torch.randn(B, C, generator=g, dtype=torch.float64)).requires_grad_() for _ in range(heads)]


def _dks_kl(logits_p: torch.Tensor, logits_q: torch.Tensor) -> torch.Tensor:
    """sundw2014/DKS@2853541 wrn_DKS/KL_divergence.py:7-24: KL(p || q) of probabilities smoothed with 1e-8."""
    p, q = F.softmax(logits_p, dim=1), F.softmax(logits_q, dim=1)
    epsilon = 1e-8
    _p = (p + epsilon) / (1.0 + C * epsilon)
    _q = (q + epsilon) / (1.0 + C * epsilon)
    return torch.mean(torch.sum(_p * torch.log(_p / _q), 1))


def _dks(outputs: list[torch.Tensor], targets: torch.Tensor) -> torch.Tensor:
    """sundw2014/DKS@2853541 wrn_DKS/main.py:142-148: every head's CE plus KL(sg(p_other) || p_head), all pairs."""
    loss = []
    for o in outputs:
        loss.append(F.cross_entropy(o, targets))
        for o2 in outputs:
            if o is not o2:
                loss.append(_dks_kl(o2.detach(), o))
    return sum(loss)


@pytest.mark.parametrize("std", [1.0, 3.0, 10.0])
def test_dks_is_the_authors_loss_at_its_defaults(std):
    heads = _logits(3, std, seed=int(std))
    y = torch.randint(0, C, (B,), generator=torch.Generator().manual_seed(7))
    cfg = load_config("smoke", ["loss.mode=dks"])
    assert (cfg.loss.temperature, cfg.loss.t2, cfg.loss.eps, cfg.loss.detach) == (1.0, False, 1e-8, True)
    ours = build_loss(cfg, ("main", "head1", "head2")).double()(tuple(heads), y)["loss"]
    theirs = _dks(heads, y)
    torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-10)
    for a, b in zip(torch.autograd.grad(ours, heads), torch.autograd.grad(theirs, heads)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    exact = build_loss(load_config("smoke", ["loss.mode=dks", "loss.eps=0"]), ("main", "head1", "head2")).double()
    assert abs(float(exact(tuple(heads), y)["loss"]) - float(theirs)) > 1e-9  # the exact-KL switch differs


def test_dks_at_its_defaults_is_dhm_on_the_same_heads():
    """DKS's smoothing is DHM's released form, T = 1 makes T^2 = 1 and the pair graph is the same: on the same
    branches the two methods are one loss (the faithful siblings table's `dks` and `dhm` runs agree to the last
    digit); they differ where DKS's branch layout differs (docs/method.md section 8)."""
    heads, y = _logits(3, 3.0, seed=5), torch.randint(0, C, (B,), generator=torch.Generator().manual_seed(2))
    dks, dhm = (
        build_loss(load_config("smoke", [f"loss.mode={m}"]), ("main", "head1", "head2")) for m in ("dks", "dhm")
    )
    a, b = dks.double()(tuple(heads), y)["loss"], dhm.double()(tuple(heads), y)["loss"]
    assert float(a) == float(b)
    for ga, gb in zip(torch.autograd.grad(a, heads), torch.autograd.grad(b, heads)):
        assert torch.equal(ga, gb)


def _pskd_authors(epochs: int, steps, alpha_T: float = 0.8):
    """lgcnsai/PS-KD-Pytorch@9aa0828 main.py:316-326 (alpha_t = alpha_T (epoch + 1) / end_epoch, per epoch) and
    :408-467 (epoch 0 writes the one-hot label into the memory before the step; soft targets
    (1 - alpha_t) onehot + alpha_t memory; after the step the memory holds the softmax), loss/pskd_loss.py
    (-(targets * log_softmax).mean(0).sum()). The authors' loader keeps every sample every epoch; a sample a
    sampler skipped is taught by its one-hot label, as the epoch-0 rule gives. Yields each step's loss."""
    memory = torch.zeros(10, C, dtype=torch.float64)
    seen = torch.zeros(10, dtype=torch.bool)
    for epoch, index, logits, y in steps:
        alpha_t = max(0, alpha_T * ((epoch + 1) / epochs))
        onehot = torch.eye(C, dtype=torch.float64)[y]
        past = torch.where(seen[index][:, None], memory[index], onehot)  # epoch 0 / never seen: the label
        soft = (1 - alpha_t) * onehot + alpha_t * past
        yield (-soft * F.log_softmax(logits, dim=1)).mean(0).sum()
        memory[index] = F.softmax(logits, dim=1).detach()
        seen[index] = True


def test_pskd_is_the_authors_over_epochs_with_a_skipped_sample():
    g = torch.Generator().manual_seed(5)
    labels = torch.randint(0, C, (10,), generator=g)
    orders = [torch.tensor([3, 1, 4, 0, 5, 9, 2, 6]), torch.tensor([7, 8, 1, 2, 0, 3, 4, 5]), torch.randperm(10)[:8]]
    steps = []
    for epoch, order in enumerate(orders):  # 8 of 10 samples an epoch, 2 steps of 4: 7 and 8 unseen in epoch 0
        for part in order.split(4):
            logits = (3.0 * torch.randn(4, C, generator=g, dtype=torch.float64)).requires_grad_()
            steps.append((epoch, part, logits, labels[part]))
    cfg = load_config("smoke", ["loss.mode=pskd", "train.epochs=3"])
    term = build_loss(cfg, None, num_classes=C, num_samples=10).double()
    for (epoch, index, logits, y), want in zip(steps, _pskd_authors(3, steps)):
        z = logits.detach().clone().requires_grad_()
        got = term(z, y, {"index": index}, progress=epoch + 0.5)["loss"]
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
        (grad_got,), (grad_want,) = torch.autograd.grad(got, [z]), torch.autograd.grad(want, [logits])
        torch.testing.assert_close(grad_got, grad_want, rtol=1e-10, atol=1e-12)
    # a_t reaches a_T at the last epoch, one epoch earlier than dhm's former e / E
    term.set_progress(2.0)
    assert float(term.terms[0].alpha_now) == pytest.approx(0.8)
