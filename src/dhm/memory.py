"""Memory that cannot fit: sizes estimated before allocating (a model's parameters, a decoded dataset) and
refused with the estimate, and allocation failures of PyTorch or Python recognised, so that dhm reports them in
one line instead of a traceback."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
from collections.abc import Callable
from typing import Any

from torch import nn

from .errors import DHMError

GB = 1 << 30


def physical_bytes() -> int:
    """This machine's physical memory (0 where the system does not say)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 0


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None


def release_freed_memory() -> None:
    """Give the C heap's freed pages back to the system (glibc's ``malloc_trim``; nothing elsewhere).

    A loop that decodes images and frees batches of a few MB each grows the resident memory with the number of
    iterations under glibc (its mmap threshold rises after the first free, so later batches come from the heap,
    whose holes are not returned; BENCHMARKS.md, "Gallery search", measures ``dhm embed`` with it). Streaming loops
    call this once per batch."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def check_fits(nbytes: int, what: str, hint: str) -> None:
    """DHMError naming the estimate when ``nbytes`` exceed the machine's physical memory."""
    total = physical_bytes()
    if total and nbytes > total:
        raise DHMError(
            f"{what} needs about {nbytes / GB:,.1f} GB, more than this machine's {total / GB:.0f} GB; {hint}"
        )


def model_bytes(build: Callable[[], nn.Module]) -> int | None:
    """The bytes of the parameters and buffers of the model ``build()`` makes, built on the meta device (nothing
    allocated); None where the model cannot be built there (some hub models compute during construction)."""
    import torch

    try:
        with torch.device("meta"):
            shell = build()
    except Exception:  # noqa: BLE001 - only an estimate: the real build that follows raises whatever is wrong
        return None
    tensors = [*shell.parameters(), *shell.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors)


def is_allocation_failure(exc: BaseException) -> bool:
    """Whether ``exc`` is Python's MemoryError or PyTorch's report of a failed allocation (CPU or GPU)."""
    if isinstance(exc, MemoryError):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and any(
        words in text for words in ("can't allocate memory", "out of memory", "not enough memory", "Out of memory")
    )


def allocation_message(exc: BaseException) -> str:
    """One line for a failed allocation."""
    detail: Any = str(exc).splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
    return (
        f"out of memory ({detail}); reduce data.batch_size, data.image_size or the model's width, "
        "or use a machine with more memory"
    )
