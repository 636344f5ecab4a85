"""``data.image_size``: one side (a square) or ``[height, width]`` (re-ID's 256x128)."""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import DataError


def image_hw(size: int | Sequence[int] | None) -> tuple[int, int] | None:
    """``(height, width)`` of ``data.image_size`` (None stays None: the native size)."""
    if size is None:
        return None
    if isinstance(size, int):
        return size, size
    if len(size) != 2 or not all(isinstance(s, int) and s >= 1 for s in size):
        raise DataError(f"data.image_size is one side or [height, width] of positive integers, got {list(size)}")
    return int(size[0]), int(size[1])


def square(size: int | Sequence[int] | None, what: str) -> int | None:
    """``data.image_size`` as one side, for datasets and crops that make square images; a DataError otherwise."""
    hw = image_hw(size)
    if hw is not None and hw[0] != hw[1]:
        raise DataError(f"{what} makes square images: give data.image_size as one side, got {list(size)}")
    return None if hw is None else hw[0]
