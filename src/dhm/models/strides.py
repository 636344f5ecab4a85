"""The ``last_stride`` option of the ResNet families (re-ID keeps the last stage at the previous resolution)."""

from __future__ import annotations


def check_last_stride(stride: int) -> int:
    """``stride`` if it is 1 or 2 (the last stage's first block), else a ValueError naming the option."""
    if stride not in (1, 2) or isinstance(stride, bool):
        raise ValueError(f"model.last_stride must be 1 or 2, got {stride!r}")
    return int(stride)
