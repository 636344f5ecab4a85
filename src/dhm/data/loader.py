"""Loaders that yield normalised float batches on the training device.

Both kinds follow one plan: each epoch is a seeded permutation cut into global batches (all processes and
accumulation steps together); process ``rank`` takes micro-batch ``m * world + rank`` of each. A run therefore
sees the same images in the same optimizer steps whatever its process count, and a resumed epoch replays exactly.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from ..errors import DataError
from .augment import AUGMENTS, Preset, apply_batch, center_crop, draw_params, normalize, random_resized_crop, step_seed
from .folder import load_image
from .sources import FileSource, Source, TensorSource


@dataclass
class Plan:
    """Who gets which indices, for one split."""

    size: int
    batch_size: int  # global (train) or per process (eval)
    train: bool
    seed: int = 0
    rank: int = 0
    world: int = 1
    accum: int = 1

    def __post_init__(self) -> None:
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

    @property
    def steps(self) -> int:
        """Optimizer steps per epoch (train: last partial batch dropped)."""
        if self.train:
            return self.size // self.batch_size
        return math.ceil(len(range(self.rank, self.size, self.world)) / self.batch_size)

    def batches(self, epoch: int) -> Iterator[tuple[Tensor, int, slice]]:
        """(indices, step, slice of the global batch) for each micro-batch of this process."""
        if not self.train:
            shard = torch.arange(self.rank, self.size, self.world)
            for step in range(self.steps):
                yield shard[step * self.batch_size : (step + 1) * self.batch_size], step, slice(None)
            return
        perm = torch.randperm(self.size, generator=torch.Generator().manual_seed(step_seed(self.seed, epoch, -1)))
        for step in range(self.steps):
            batch = perm[step * self.batch_size : (step + 1) * self.batch_size]
            for m in range(self.accum):
                part = m * self.world + self.rank
                sl = slice(part * self.micro, (part + 1) * self.micro)
                yield batch[sl], step, sl


class _Base:
    def __init__(
        self, source: Source, plan: Plan, preset: Preset, mean, std, device: torch.device, channels_last: bool
    ) -> None:
        self.source, self.plan, self.preset, self.device, self.channels_last = (
            source,
            plan,
            preset,
            device,
            channels_last,
        )
        self.mean = torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.plan.steps * (self.plan.accum if self.plan.train else 1)

    def _finish(self, images: Tensor, step: int, sl: slice) -> Tensor:
        images = images.to(self.device, non_blocking=True)
        if self.plan.train and (self.preset.pad or self.preset.flip):
            dy, dx, flips = draw_params(self.preset, self.plan.batch_size, step_seed(self.plan.seed, self.epoch, step))
            images = apply_batch(images, self.preset, dy[sl], dx[sl], flips[sl])
        return normalize(images, self.mean, self.std, self.channels_last)


class TensorLoader(_Base):
    """In-memory uint8 images, held on the training device and augmented there batch-wise."""

    def __init__(self, source: TensorSource, *args, **kwargs) -> None:
        super().__init__(source, *args, **kwargs)
        self.images = source.images.to(self.device)
        self.labels = source.labels.to(self.device)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        for index, step, sl in self.plan.batches(self.epoch):
            index = index.to(self.device)
            yield self._finish(self.images[index], step, sl), self.labels[index]


class _FileDataset(Dataset):
    """Decodes one file per item: ``dataset[(index, seed)]`` -> (uint8 (3, S, S) tensor, label)."""

    def __init__(self, source: FileSource, size: int | None, train: bool, resized_crop: bool) -> None:
        self.source, self.size, self.train, self.resized_crop = source, size, train, resized_crop

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, item: tuple[int, int]) -> tuple[Tensor, int]:
        from PIL import Image

        index, seed = item
        path = self.source.files[index]
        if self.size is not None and self.resized_crop:
            with Image.open(path) as img:
                img = img.convert("RGB")
                rng = random.Random(seed)
                img = random_resized_crop(img, self.size, rng) if self.train else center_crop(img, self.size)
                array = torch.from_numpy(np.asarray(img).copy())
        else:
            array = torch.from_numpy(load_image(path, self.size).copy())
        return array.permute(2, 0, 1), int(self.source.labels[index])


class FileLoader(_Base):
    """Image files decoded by DataLoader workers (per-image work only), then augmented batch-wise on the device."""

    def __init__(self, source: FileSource, *args, image_size: int | None = None, workers: int = 4, **kwargs) -> None:
        super().__init__(source, *args, **kwargs)
        self.dataset = _FileDataset(source, image_size, self.plan.train, self.preset.resized_crop)
        self.workers = workers

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        plan = list(self.plan.batches(self.epoch))
        sampler = [[(int(i), step_seed(self.plan.seed, self.epoch, int(i))) for i in index] for index, _, _ in plan]
        loader = DataLoader(
            self.dataset,
            batch_sampler=sampler,
            num_workers=self.workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=False,
        )
        for (images, labels), (_, step, sl) in zip(loader, plan):
            yield self._finish(images, step, sl), labels.to(self.device, non_blocking=True)


def build_loader(
    source: Source,
    *,
    train: bool,
    batch_size: int,
    augment: str,
    mean,
    std,
    device: torch.device,
    seed: int = 0,
    rank: int = 0,
    world: int = 1,
    accum: int = 1,
    channels_last: bool = False,
    image_size: int | None = None,
    workers: int = 4,
) -> _Base:
    """A loader for ``source``: in-memory tensors stay on ``device``; files are read by ``workers`` processes.

    ``batch_size`` is the global batch when ``train`` (split over processes and accumulation steps) and the
    per-process batch otherwise.
    """
    plan = Plan(len(source), batch_size, train, seed, rank, world, accum)
    args = (plan, AUGMENTS.get(augment), mean, std, device, channels_last)
    if isinstance(source, TensorSource):
        return TensorLoader(source, *args)
    return FileLoader(source, *args, image_size=image_size, workers=workers)
