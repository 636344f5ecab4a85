"""What a loader yields: ``Batch(x, y, meta)``, a pair ``(x, y)`` that also carries per-sample metadata."""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor


class Batch(tuple):
    """``(images, labels)`` plus ``meta``: per-sample tensors by name, aligned with ``y`` (``index``, the sample's
    position in its split, always for dhm's own loaders; ``camera`` or anything else a dataset carries).

    It is a 2-tuple, so ``x, y = batch`` and ``batch[0]`` keep working; ``batch.meta`` is the extra.

    Example:
        >>> batch = Batch(images, labels, {"index": index})
        >>> x, y = batch
        >>> batch.meta["index"]
    """

    meta: dict[str, Tensor]

    def __new__(cls, x: Tensor, y: Tensor, meta: Mapping[str, Tensor] | None = None) -> Batch:
        batch = super().__new__(cls, (x, y))
        batch.meta = dict(meta or {})
        return batch

    @property
    def x(self) -> Tensor:
        """The images."""
        return self[0]

    @property
    def y(self) -> Tensor:
        """The labels."""
        return self[1]

    def __repr__(self) -> str:
        return f"Batch(x={tuple(self[0].shape)}, y={tuple(self[1].shape)}, meta={sorted(self.meta)})"


def batch_meta(batch: object) -> dict[str, Tensor]:
    """The metadata of ``batch`` (empty for a user's plain ``(x, y)`` pair)."""
    return getattr(batch, "meta", {})
