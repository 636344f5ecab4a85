"""What a dataset reader returns: images in memory (uint8 tensors) or files on disk, plus normalisation facts."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor


@dataclass
class TensorSource:
    """Images held in memory: ``images`` uint8 (N, C, H, W), ``labels`` int64 (N,), ``meta`` per-sample tensors
    by name (N, ...), e.g. ``camera``; a subset takes all three together."""

    images: Tensor
    labels: Tensor
    meta: dict[str, Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: Tensor) -> TensorSource:
        return TensorSource(self.images[index], self.labels[index], subset_meta(self.meta, index))


@dataclass
class FileSource:
    """Images on disk, decoded on the fly by DataLoader workers: ``files[i]`` has class ``labels[i]`` and the
    per-sample tensors ``meta[name][i]``."""

    files: list[Path]
    labels: Tensor
    meta: dict[str, Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: Tensor) -> FileSource:
        return FileSource([self.files[i] for i in index.tolist()], self.labels[index], subset_meta(self.meta, index))


def subset_meta(meta: dict[str, Tensor], index: Tensor) -> dict[str, Tensor]:
    """Every per-sample tensor of ``meta`` at ``index``."""
    return {name: values[index] for name, values in meta.items()}


Source = TensorSource | FileSource


@dataclass
class Bundle:
    """A dataset's named splits and its facts: ``train``, ``test`` (``None`` where a dataset has none) and any
    further evaluation splits in ``more`` (``{"query": ..., "gallery": ...}``). The validation split is carved
    from ``train`` later, as the run's config says."""

    train: Source
    test: Source | None
    classes: list[str]
    channels: int
    mean: tuple[float, ...] = ()  # per channel, in [0, 1] units; empty = computed from the training images
    std: tuple[float, ...] = ()
    more: dict[str, Source] = field(default_factory=dict)
    # whether the evaluation splits number identities apart from training (MSMT17: 0.. in each), so equal numbers
    # are not the same person; else an equal number is, and an evaluated identity must not be a training one
    separate_ids: bool = False

    @property
    def splits(self) -> dict[str, Source]:
        """Every split by name, ``train`` first (absent ones left out)."""
        named = {"train": self.train, "test": self.test, **self.more}
        return {name: source for name, source in named.items() if source is not None}

    def __post_init__(self) -> None:
        if not self.mean and isinstance(self.train, TensorSource):
            x = self.train.images.float().div_(255)
            self.mean = tuple(x.mean(dim=(0, 2, 3)).tolist())
            self.std = tuple(x.std(dim=(0, 2, 3)).clamp_min(1e-3).tolist())


def take_subset(source: Source, count: int, seed: int) -> Source:
    """A seeded subset of ``count`` items (all of them when ``count`` is 0 or larger than the source)."""
    if count <= 0 or count >= len(source):
        return source
    perm = torch.randperm(len(source), generator=torch.Generator().manual_seed(seed + 1))
    return source.subset(perm[:count].sort().values)
