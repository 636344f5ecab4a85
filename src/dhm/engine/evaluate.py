"""Evaluation: top-1 of every head and of their ensemble, how often the heads agree, summed over processes."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..branches import DHMModel, unwrap
from . import dist as D
from .precision import autocast
from .progress import LogProgress


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader,
    device: torch.device,
    amp: str = "off",
    heads: bool = True,
    log: LogProgress | None = None,
) -> dict[str, float]:
    """Top-1 accuracy (%) of the main head, and with ``heads`` of every head and of their ensemble (mean of the
    softmax outputs); summed over processes. Runs in eval mode and restores the previous mode. ``log`` prints
    progress lines for long evaluations."""
    inner = unwrap(model)
    was_training = inner.training
    inner.eval()
    names = inner.head_names if heads and isinstance(inner, DHMModel) else ("main",)
    correct = torch.zeros(len(names) + 2, dtype=torch.float64, device=device)  # heads, ensemble, all agree
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    count = torch.zeros((), dtype=torch.float64, device=device)
    for i, (x, y) in enumerate(loader):
        if log is not None and i:
            log.update(i)  # batches done so far
        with autocast(device, amp):
            outs = inner.forward_heads(x) if len(names) > 1 else (inner(x),)
        outs = [o.float() for o in outs]
        ensemble = torch.stack([o.softmax(-1) for o in outs]).mean(0)
        for k, o in enumerate([*outs, ensemble]):
            correct[k] += (o.argmax(-1) == y).sum()
        predictions = torch.stack([o.argmax(-1) for o in outs])
        correct[-1] += (predictions == predictions[0]).all(0).sum()
        loss_sum += F.cross_entropy(outs[0], y, reduction="sum")
        count += y.numel()
    D.all_reduce_sum(correct), D.all_reduce_sum(loss_sum), D.all_reduce_sum(count)
    inner.train(was_training)
    n = max(count.item(), 1.0)
    result = {f"acc1/{name}": 100.0 * c / n for name, c in zip([*names, "ensemble"], correct.tolist())}
    if len(names) == 1:
        result.pop("acc1/ensemble")
    else:  # how often every head predicts the main head's class (the mimicking's visible effect)
        result["agree"] = 100.0 * correct[-1].item() / n
    result["loss"] = loss_sum.item() / n
    return result
