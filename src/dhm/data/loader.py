"""Loaders that yield normalised float batches on the training device, as :class:`~dhm.data.batch.Batch`
``(x, y, meta)``: ``meta`` holds each sample's ``index`` in its split and the split's own per-sample metadata.

Both kinds follow one batch plan (:mod:`dhm.data.plan`): the sampler's global batches, cut into the micro-batches
of the processes and accumulation steps, the same whatever the process count, and replayed exactly on resume.

In-memory images never leave the training device: the order and the augmentation parameters of an epoch are
drawn there once, when the epoch starts, so a step is indexing and arithmetic on device tensors and never copies
from the host or waits for it.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from ..errors import DataError
from .augment import AUGMENTS, Preset, apply_batch, center_crop, draw_params, normalize, random_resized_crop, step_seed
from .batch import Batch
from .decode import read_image
from .folder import load_image
from .plan import BatchPlan
from .samplers import Sampler
from .sizes import square
from .sources import FileSource, Source, TensorSource

AugmentParams = tuple[Tensor, ...]  # dy, dx, flips (and erasing draws) for every image of an epoch's global batches


class _Base:
    def __init__(
        self, source: Source, plan: BatchPlan, preset: Preset, mean, std, device: torch.device, channels_last: bool
    ) -> None:
        self.source, self.plan, self.preset, self.device, self.channels_last = (
            source,
            plan,
            preset,
            device,
            channels_last,
        )
        self.meta = {k: v.to(device) for k, v in source.meta.items()}  # per-sample metadata, on the device
        self.mean = torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self.fill = (self.mean.flatten() * 255).round().to(torch.uint8)  # random erasing's value: the mean pixel
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @property
    def steps(self) -> int:
        """Optimizer steps per epoch (batches, for an evaluation loader)."""
        return self.plan.steps

    def __len__(self) -> int:
        return self.plan.steps * (self.plan.accum if self.plan.train else 1)

    def _meta(self, index: Tensor) -> dict[str, Tensor]:
        """The batch's metadata: the samples' ``index`` in the split and the split's own per-sample tensors."""
        index = index.to(self.device, non_blocking=True)
        return {"index": index, **{k: v[index] for k, v in self.meta.items()}}

    def _augments(self, generator: torch.Generator) -> AugmentParams | None:
        """The whole epoch's augmentation parameters, drawn once (after the permutation, from the same stream)
        and moved to the training device once."""
        if not (self.plan.train and (self.preset.pad or self.preset.flip or self.preset.erase)):
            return None
        params = draw_params(self.preset, self.plan.steps * self.plan.batch_size, generator)
        return tuple(p.to(self.device) for p in params)

    def _finish(self, images: Tensor, step: int, sl: slice, params: AugmentParams | None) -> Tensor:
        images = images.to(self.device, non_blocking=True)
        if params is not None:
            start = step * self.plan.batch_size
            part = slice(start + (sl.start or 0), start + (sl.stop if sl.stop is not None else self.plan.batch_size))
            dy, dx, flips, *erase = (p[part] for p in params)
            images = apply_batch(images, self.preset, dy, dx, flips, erase[0] if erase else None, self.fill)
        return normalize(images, self.mean, self.std, self.channels_last)


class TensorLoader(_Base):
    """In-memory uint8 images, held on the training device and augmented there batch-wise."""

    def __init__(self, source: TensorSource, *args, **kwargs) -> None:
        super().__init__(source, *args, **kwargs)
        self.images = source.images.to(self.device)
        self.labels = source.labels.to(self.device)

    def __iter__(self) -> Iterator[Batch]:
        generator = self.plan.generator(self.epoch, self.device) if self.plan.train else None
        batches = list(self.plan.batches(self.epoch, self.device, generator))  # slices of one device permutation
        params = self._augments(generator) if generator is not None else None
        for index, step, sl in batches:
            yield Batch(self._finish(self.images[index], step, sl, params), self.labels[index], self._meta(index))


class _FileDataset(Dataset):
    """Decodes one file per item: ``dataset[(index, seed)]`` -> (uint8 (3, S, S) tensor, label)."""

    def __init__(self, source: FileSource, size: int | None, train: bool, resized_crop: bool) -> None:
        self.source, self.size, self.train, self.resized_crop = source, size, train, resized_crop

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, item: tuple[int, int]) -> tuple[Tensor, int]:
        index, seed = item
        path = self.source.files[index]
        if self.size is not None and self.resized_crop:
            img, rng = read_image(path), random.Random(seed)
            img = random_resized_crop(img, self.size, rng) if self.train else center_crop(img, self.size)
            array = torch.from_numpy(np.asarray(img).copy())
        else:
            array = torch.from_numpy(load_image(path, self.size).copy())
        return array.permute(2, 0, 1), int(self.source.labels[index])


class FileLoader(_Base):
    """Image files decoded by DataLoader workers (per-image work only), then augmented batch-wise on the device."""

    def __init__(self, source: FileSource, *args, image_size: int | None = None, workers: int = 4, **kwargs) -> None:
        super().__init__(source, *args, **kwargs)
        if self.preset.resized_crop:
            image_size = square(image_size, "the random resized crop (data.augment=imagenet)")
        self.dataset = _FileDataset(source, image_size, self.plan.train, self.preset.resized_crop)
        self.workers = workers

    def __iter__(self) -> Iterator[Batch]:
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
                (images, labels), (index, step, sl) = next(batches)
            except StopIteration:
                return
            except DataError as exc:  # raised in a worker: keep the original one line, not the worker's traceback
                raise DataError(_worker_message(exc)) from None
            x, y = self._finish(images, step, sl, params), labels.to(self.device, non_blocking=True)
            yield Batch(x, y, self._meta(index))


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
    sampler: Sampler | None = None,
    pad: int | None = None,
) -> _Base:
    """A loader for ``source``: in-memory tensors stay on ``device``; files are read by ``workers`` processes.

    ``batch_size`` is the global batch when ``train`` (split over processes and accumulation steps) and the
    per-process batch otherwise; ``sampler`` draws the training order (default: ``random``); ``pad`` replaces the
    augmentation preset's pad-and-crop shift (small images want a smaller one).
    """
    plan = BatchPlan(len(source), batch_size, train, seed, rank, world, accum, sampler if train else None)
    preset = AUGMENTS.get(augment)
    if pad is not None:
        preset = dataclasses.replace(preset, pad=pad)
    args = (plan, preset, mean, std, device, channels_last)
    if isinstance(source, TensorSource):
        return TensorLoader(source, *args)
    return FileLoader(source, *args, image_size=image_size, workers=workers)
