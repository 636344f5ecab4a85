"""A user's own batches (a ``torch.utils.data.DataLoader``, say) as an engine loader."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch
from torch import Tensor

from ..errors import ConfigError, DataError
from .batch import Batch, batch_meta
from .own_checks import BatchCheck


class DeviceLoader:
    """Yields a user loader's ``(images, labels)`` batches on ``device`` as :class:`~dhm.data.batch.Batch` (a
    :class:`Batch` the loader yields keeps its ``meta``, moved along). The copies are ``non_blocking`` (with
    ``pin_memory=True`` in the DataLoader they overlap the step); ``set_epoch`` reaches a ``DistributedSampler``.

    Example:
        >>> loader = DeviceLoader(DataLoader(dataset, batch_size=128, shuffle=True), torch.device("cpu"))
    """

    def __init__(
        self,
        loader: Iterable,
        device: torch.device,
        accum: int = 1,
        channels_last: bool = False,
        name: str = "train",
        check: BatchCheck | None = None,
    ) -> None:
        try:
            batches = len(loader)  # type: ignore[arg-type]
        except TypeError:
            raise ConfigError(
                f"the {name} loader has no length; the engine needs one (an epoch's step count)"
            ) from None
        if batches < accum:
            raise ConfigError(f"the {name} loader yields {batches} batches, fewer than train.accum_steps={accum}")
        self.loader, self.device, self.accum, self.name = loader, device, accum, name
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.steps = batches // accum
        self.check = check or BatchCheck(name, None)

    def set_epoch(self, epoch: int) -> None:
        for sampler in (getattr(self.loader, "sampler", None), getattr(self.loader, "batch_sampler", None)):
            if hasattr(sampler, "set_epoch"):
                sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return self.steps * self.accum

    def __iter__(self) -> Iterator[Batch]:
        self.check.start()
        for batch in self.loader:
            if not (isinstance(batch, (tuple, list)) and len(batch) == 2 and all(isinstance(b, Tensor) for b in batch)):
                raise DataError(
                    f"the {self.name} loader must yield (images, labels) tensor pairs; got {type(batch).__name__}"
                )
            x, y = batch
            self.check.batch(x, y)
            meta = {k: v.to(self.device, non_blocking=True) for k, v in batch_meta(batch).items()}
            x = x.to(self.device, non_blocking=True, memory_format=self.memory_format)
            self.check.first_on_device(x)
            yield Batch(x, y.to(self.device, non_blocking=True), meta)
        self.check.finish()
