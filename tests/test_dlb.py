"""DLB as its authors train it, in float64: the built-in method's step (its sampler's layout, two forwards, the
loss with the last step's logits) against the authors' training loop written out from Meta-knowledge-Lab/DLB@5de954b
dlb.py:64-108 (``train_one_epoch``: ``out`` of the new images, then ``out_pre`` of the previous batch's images, CE
over both + alpha T^2 KL(softmax(pre_out.detach() / T) || softmax(out_pre / T)), batch mean; the first step CE
alone) and :142-148 (the previous batch carried across epochs), with their SGD (momentum 0.9, Nesterov, weight decay
5e-4); weights and BatchNorm buffers equal to 1e-10 after four steps."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from conftest import tiny_cifar

from dhm.builtins.dlb import LastBatchPairs
from dhm.config import load_config
from dhm.engine.build import build_loss
from dhm.steps import make_step


def _authors(model, batches, alpha: float, t: float) -> None:
    """Meta-knowledge-Lab/DLB@5de954b dlb.py:64-108, one view per image (no augmentation here)."""
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    pre_data, pre_out = None, None
    for images, label in batches:
        out = model(images)
        if pre_data is not None:
            pre_images, pre_label = pre_data
            out_pre = model(pre_images)
            ce_loss = F.cross_entropy(torch.cat((out_pre, out), 0), torch.cat((pre_label, label), 0))
            kl = F.kl_div(F.log_softmax(out_pre / t, 1), F.softmax(pre_out.detach() / t, 1), reduction="batchmean")
            loss = ce_loss + alpha * kl * t * t
        else:
            loss = F.cross_entropy(out, label)
        pre_data, pre_out = (images, label), out
        opt.zero_grad()
        loss.backward()
        opt.step()


def _interleave(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.stack([a, b], 1).flatten(0, 1)


def test_dlb_trains_as_the_authors_code_over_steps_in_float64():
    torch.manual_seed(0)
    model = tiny_cifar(branches="none").double().train()
    theirs = copy.deepcopy(model)
    batches = [(torch.randn(4, 3, 32, 32, dtype=torch.float64), torch.randint(0, 10, (4,))) for _ in range(4)]
    _authors(theirs, batches, alpha=1.0, t=3.0)
    cfg = load_config("smoke", ["loss.mode=dlb"])
    assert (cfg.loss.alpha, cfg.loss.temperature, cfg.data.sampler, cfg.model.branches) == (
        1.0,
        3.0,
        "dlb-pairs",
        "none",
    )
    loss_fn = build_loss(cfg, None)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    step = make_step("dlb-halves", model, loss_fn, opt, scaler, "off", torch.device("cpu"))
    previous = batches[0]
    for images, label in batches:  # the sampler's layout: (new image, last step's image at its place), interleaved
        step(_interleave(images, previous[0]), _interleave(label, previous[1]))
        previous = (images, label)
    ours, want = model.state_dict(), theirs.state_dict()
    for key in want:
        if want[key].is_floating_point():
            torch.testing.assert_close(ours[key], want[key], rtol=1e-10, atol=1e-10, msg=key)
        else:
            assert torch.equal(ours[key], want[key]), key
    # the term's memory and flag are checkpointed state: a fresh term loaded from it continues exactly
    fresh = build_loss(cfg, None)
    fresh.load_state_dict(loss_fn.state_dict())
    assert fresh.terms[0].ready and torch.equal(fresh.terms[0].previous, loss_fn.terms[0].previous)


def test_the_sampler_pairs_each_new_image_with_the_last_steps_image_across_epochs():
    sampler = LastBatchPairs(torch.zeros(20))
    assert sampler.steps(8) == 5 and sampler.group == 2
    gen = torch.Generator()
    first = sampler.draw(5, 8, gen, seed=11).view(5, 4, 2)
    second = sampler.draw(5, 8, gen, seed=12, previous_seed=11).view(5, 4, 2)
    assert torch.equal(second[1:, :, 1], second[:-1, :, 0])  # last step's new images at the same places
    assert torch.equal(second[0, :, 1], first[-1, :, 0])  # across the epoch boundary
    assert len(set(second[:, :, 0].flatten().tolist())) == 20  # every image new once per epoch
