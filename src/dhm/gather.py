"""Rows of every process, gathered (never summed into a padded whole): what a split's evaluation and a per-sample
memory need under DDP. Each process sends its rows padded to the largest process's count, so it receives about
N x D values for N rows in all (not W x N x D)."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


def world() -> int:
    """The number of processes (1 outside a process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def gather_rows(rows: Tensor) -> Tensor:
    """Every process's ``rows`` (any count each, the same trailing shape), concatenated in rank order; ``rows``
    itself in a world of one. One host synchronisation (the counts): for evaluation and per-epoch bookkeeping."""
    count = world()
    if count == 1:
        return rows
    size = torch.tensor([rows.shape[0]], device=rows.device)
    sizes = [torch.zeros_like(size) for _ in range(count)]
    dist.all_gather(sizes, size)
    counts = [int(s) for s in sizes]
    padded = rows.new_zeros((max(counts), *rows.shape[1:]))
    padded[: rows.shape[0]] = rows
    parts = [torch.empty_like(padded) for _ in range(count)]
    dist.all_gather(parts, padded.contiguous())
    return torch.cat([part[:n] for part, n in zip(parts, counts)])


def gather_equal(rows: Tensor) -> Tensor:
    """Every process's ``rows`` when all processes hold the same count (a training micro-batch), concatenated in
    rank order, without a host synchronisation; ``rows`` itself in a world of one."""
    count = world()
    if count == 1:
        return rows
    out = rows.new_empty((count * rows.shape[0], *rows.shape[1:]))
    dist.all_gather_into_tensor(out, rows.contiguous())
    return out
