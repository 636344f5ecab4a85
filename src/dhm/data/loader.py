"""Loaders that yield normalised float batches on the training device.

Both kinds follow one plan: each epoch is a seeded permutation cut into global batches (all processes and
accumulation steps together); process ``rank`` takes micro-batch ``m * world + rank`` of each. A run therefore
sees the same images in the same optimizer steps whatever its process count, and a resumed epoch replays exactly.

In-memory images never leave the training device: the permutation and the augmentation parameters of an epoch
are drawn there once, when the epoch starts, so a step is indexing and arithmetic on device tensors and never
copies from the host or waits for it.
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

AugmentParams = tuple[Tensor, Tensor, Tensor]  # dy, dx, flips for every image of an epoch's global batches
from .folder import load_image, rgb8
from .sources import FileSource, Source, TensorSource


def permutation(size: int, generator: torch.Generator) -> Tensor:
    """A random permutation drawn on the generator's device: a stable sort of random 62-bit keys (CUDA's
    ``randperm`` draws small permutations on the host and copies them over, a synchronising copy)."""
    keys = torch.randint(1 << 62, (size,), generator=generator, device=generator.device)
    return torch.argsort(keys, stable=True)


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

    def generator(self, epoch: int, device: torch.device) -> torch.Generator:
        """The epoch's random stream on ``device``: the permutation first, then the augmentation parameters."""
        return torch.Generator(device=device).manual_seed(step_seed(self.seed, epoch, -1))

    def batches(
        self, epoch: int, device: torch.device | None = None, generator: torch.Generator | None = None
    ) -> Iterator[tuple[Tensor, int, slice]]:
        """(indices on ``device`` (default: the CPU), step, slice of the global batch) for each micro-batch of this
        process; a training permutation is drawn from ``generator`` (default: the epoch's own, on ``device``)."""
        device = device or torch.device("cpu")
        if not self.train:
            shard = torch.arange(self.rank, self.size, self.world, device=device)
            for step in range(self.steps):
                yield shard[step * self.batch_size : (step + 1) * self.batch_size], step, slice(None)
            return
        generator = generator or self.generator(epoch, device)
        perm = permutation(self.size, generator)
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

    @property
    def steps(self) -> int:
        """Optimizer steps per epoch (batches, for an evaluation loader)."""
        return self.plan.steps

    def __len__(self) -> int:
        return self.plan.steps * (self.plan.accum if self.plan.train else 1)

    def _augments(self, generator: torch.Generator) -> AugmentParams | None:
        """The whole epoch's augmentation parameters, drawn once (after the permutation, from the same stream)
        and moved to the training device once."""
        if not (self.plan.train and (self.preset.pad or self.preset.flip)):
            return None
        params = draw_params(self.preset, self.plan.steps * self.plan.batch_size, generator)
        return tuple(p.to(self.device) for p in params)

    def _finish(self, images: Tensor, step: int, sl: slice, params: AugmentParams | None) -> Tensor:
        images = images.to(self.device, non_blocking=True)
        if params is not None:
            start = step * self.plan.batch_size
            part = slice(start + (sl.start or 0), start + (sl.stop if sl.stop is not None else self.plan.batch_size))
            dy, dx, flips = (p[part] for p in params)
            images = apply_batch(images, self.preset, dy, dx, flips)
        return normalize(images, self.mean, self.std, self.channels_last)


class TensorLoader(_Base):
    """In-memory uint8 images, held on the training device and augmented there batch-wise."""

    def __init__(self, source: TensorSource, *args, **kwargs) -> None:
        super().__init__(source, *args, **kwargs)
        self.images = source.images.to(self.device)
        self.labels = source.labels.to(self.device)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        generator = self.plan.generator(self.epoch, self.device) if self.plan.train else None
        batches = list(self.plan.batches(self.epoch, self.device, generator))  # slices of one device permutation
        params = self._augments(generator) if generator is not None else None
        for index, step, sl in batches:
            yield self._finish(self.images[index], step, sl, params), self.labels[index]


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
                img = rgb8(img)
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
        generator = self.plan.generator(self.epoch, torch.device("cpu")) if self.plan.train else None
        plan = list(self.plan.batches(self.epoch, generator=generator))  # on the CPU: the sampler needs them there
        params = self._augments(generator) if generator is not None else None
        sampler = [[(int(i), step_seed(self.plan.seed, self.epoch, int(i))) for i in index] for index, _, _ in plan]
        loader = DataLoader(
            self.dataset,
            batch_sampler=sampler,
            num_workers=self.workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=False,
            collate_fn=_collate,
        )
        batches = iter(zip(loader, plan))
        while True:
            try:
                (images, labels), (_, step, sl) = next(batches)
            except StopIteration:
                return
            except DataError as exc:  # raised in a worker: keep the original one line, not the worker's traceback
                raise DataError(_worker_message(exc)) from None
            yield self._finish(images, step, sl, params), labels.to(self.device, non_blocking=True)


def _collate(items: list[tuple[Tensor, int]]) -> tuple[Tensor, Tensor]:
    """A batch of decoded images; images of different sizes are a DataError (resize them with data.image_size)."""
    shapes = sorted({tuple(x.shape[1:]) for x, _ in items})
    if len(shapes) > 1:
        sizes = " and ".join(f"{h}x{w}" for h, w in shapes[:2])
        raise DataError(f"the image folder mixes image sizes ({sizes}); set data.image_size to resize them")
    return torch.stack([x for x, _ in items]), torch.tensor([y for _, y in items])


def _worker_message(exc: DataError) -> str:
    """The original message of a DataError re-raised by a DataLoader worker (whose text adds a traceback)."""
    lines = [line for line in str(exc).splitlines() if line.strip()]
    last = lines[-1] if lines else str(exc)
    marker = "DataError: "
    return last.split(marker, 1)[1] if marker in last else last


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
