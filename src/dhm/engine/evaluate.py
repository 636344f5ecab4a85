"""Evaluation of one split by the run's task, summed over processes."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from ..precision import autocast
from ..tasks import EvalContext, Task, get_task
from . import dist as D
from .progress import LogProgress


def evaluate(
    model: nn.Module,
    loader: Iterable,
    device: torch.device,
    amp: str = "off",
    heads: bool = True,
    log: LogProgress | None = None,
    task: Task | None = None,
    options: dict[str, Any] | None = None,
) -> dict[str, float]:
    """The metrics of ``task`` (default: classification) on ``loader``: with ``heads`` every head's and their
    ensemble's, else the deployed head's. ``log`` prints progress lines for long evaluations; ``options`` are the
    task's evaluation options (retrieval: ``flip``, ``rerank``)."""
    ctx = EvalContext(
        device=device,
        autocast=lambda: autocast(device, amp),
        reduce_sum=D.all_reduce_sum,
        heads=heads,
        log=log.update if log is not None else None,
        options=dict(options or {}),
    )
    return (task or get_task("classification")).evaluate(model, loader, ctx)
