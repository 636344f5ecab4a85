"""The batch plan of one split: which indices each process takes, in which step.

Training: the sampler (:mod:`dhm.data.samplers`) draws each epoch's global batches (all processes and
accumulation steps together); process ``rank`` takes micro-batch ``m * world + rank`` of each. A run therefore
sees the same images in the same optimizer steps whatever its process count, and a resumed epoch replays
exactly. Evaluation: process ``rank`` takes every ``world``-th sample, in order.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from ..errors import DataError
from .augment import step_seed
from .samplers import RandomOrder, Sampler


@dataclass
class BatchPlan:
    """Who gets which indices, for one split of ``size`` samples (``sampler``: the training order; default
    ``random``)."""

    size: int
    batch_size: int  # global (train) or per process (eval)
    train: bool
    seed: int = 0
    rank: int = 0
    world: int = 1
    accum: int = 1
    sampler: Sampler | None = None

    def __post_init__(self) -> None:
        if self.sampler is None:
            self.sampler = RandomOrder(torch.empty(self.size))
        if self.train:
            parts = self.world * self.accum
            if self.batch_size % parts:
                raise DataError(
                    f"data.batch_size={self.batch_size} must be divisible by processes x accum_steps = {parts}"
                )
            if self.size < self.batch_size:
                raise DataError(
                    f"the training split has {self.size} images, fewer than one batch "
                    f"(data.batch_size={self.batch_size})"
                )
        self.micro = self.batch_size // (self.world * self.accum) if self.train else self.batch_size
        group = self.sampler.group
        if self.train and self.micro % group:
            raise DataError(
                f"a micro-batch of {self.micro} images (data.batch_size / processes / accum_steps) must hold whole "
                f"groups of {group} (data.sampler_options.instances)"
            )
        self._steps = self.sampler.steps(self.batch_size) if self.train else None

    @property
    def steps(self) -> int:
        """Optimizer steps per epoch (train: as the sampler draws them) or batches of this process (eval)."""
        if self._steps is not None:
            return self._steps
        return math.ceil(len(range(self.rank, self.size, self.world)) / self.batch_size)

    def generator(self, epoch: int, device: torch.device) -> torch.Generator:
        """The epoch's random stream on ``device``: the order first, then the augmentation parameters."""
        return torch.Generator(device=device).manual_seed(step_seed(self.seed, epoch, -1))

    def batches(
        self, epoch: int, device: torch.device | None = None, generator: torch.Generator | None = None
    ) -> Iterator[tuple[Tensor, int, slice]]:
        """(indices on ``device`` (default: the CPU), step, slice of the global batch) for each micro-batch of this
        process; a training order is drawn from ``generator`` (default: the epoch's own, on ``device``)."""
        device = device or torch.device("cpu")
        if not self.train:
            shard = torch.arange(self.rank, self.size, self.world, device=device)
            for step in range(self.steps):
                yield shard[step * self.batch_size : (step + 1) * self.batch_size], step, slice(None)
            return
        generator = generator or self.generator(epoch, device)
        seed = step_seed(self.seed, epoch, -2)
        if getattr(self.sampler, "continues", False):  # an order that continues the previous epoch's (DLB)
            previous = step_seed(self.seed, epoch - 1, -2)
            order = self.sampler.draw(self.steps, self.batch_size, generator, seed, previous_seed=previous)
        else:
            order = self.sampler.draw(self.steps, self.batch_size, generator, seed)
        for step in range(self.steps):
            batch = order[step * self.batch_size : (step + 1) * self.batch_size]
            for m in range(self.accum):
                part = m * self.world + self.rank
                sl = slice(part * self.micro, (part + 1) * self.micro)
                yield batch[sl], step, sl
