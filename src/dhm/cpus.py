"""How many CPU threads and loader workers a run takes when asked for ``auto``.

PyTorch's CPU kernels split every operation across ``torch.get_num_threads()`` threads that meet at a barrier, so
one thread descheduled by another process stalls all of them: on a 2-core CPU with one other busy process, a DHM
run at 2 threads trained at 34-37 images/s against 64-72 at 1 thread (README, "Threads"). ``auto`` therefore
measures, once at the start, how busy the cores this process may use are, and takes the idle ones (at least one,
at most torch's default). Where the user has set ``OMP_NUM_THREADS`` (torchrun does, one thread a process), that
choice stands."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import torch

from .errors import ConfigError

#: torch's thread count when this module was first imported (before any run changed it)
TORCH_DEFAULT_THREADS = torch.get_num_threads()
#: most DataLoader workers ``data.workers=auto`` starts (they decode images; more rarely pays)
MAX_AUTO_WORKERS = 4


@dataclass(frozen=True)
class ThreadChoice:
    """The thread count a run uses and why (for its header and summary.json)."""

    threads: int
    why: str


def usable_cores() -> list[int]:
    """The CPU ids this process may run on."""
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return list(range(os.cpu_count() or 1))


def _cpu_times(cores: list[int]) -> tuple[float, float] | None:
    """(busy, total) jiffies summed over ``cores`` from /proc/stat, or None where it cannot be read."""
    wanted = {f"cpu{c}" for c in cores}
    busy = total = 0.0
    try:
        with open("/proc/stat") as stat:
            for line in stat:
                fields = line.split()
                if fields and fields[0] in wanted:
                    values = [float(v) for v in fields[1:9]]
                    idle = values[3] + values[4]  # idle + iowait
                    total += sum(values)
                    busy += sum(values) - idle
    except (OSError, ValueError, IndexError):
        return None
    return (busy, total) if total > 0 else None


def busy_cores(cores: list[int], interval: float = 0.25) -> float | None:
    """How many of ``cores`` other processes keep busy, measured over ``interval`` seconds while this process
    sleeps; None where the kernel's counters cannot be read (not Linux)."""
    before = _cpu_times(cores)
    if before is None:
        return None
    time.sleep(interval)
    after = _cpu_times(cores)
    if after is None or after[1] <= before[1]:
        return None
    return len(cores) * (after[0] - before[0]) / (after[1] - before[1])


def choose_threads(requested: int | str) -> ThreadChoice:
    """The thread count for ``train.threads``: N as given; 0 torch's default; ``auto`` (see the module)."""
    if isinstance(requested, int):
        if requested > 0:
            return ThreadChoice(requested, "train.threads")
        return ThreadChoice(TORCH_DEFAULT_THREADS, "torch's default")
    if requested != "auto":
        raise ConfigError(f"train.threads must be auto or a count >= 0, got {requested!r}")
    if os.environ.get("OMP_NUM_THREADS"):
        return ThreadChoice(TORCH_DEFAULT_THREADS, "OMP_NUM_THREADS")
    cores = usable_cores()
    busy = busy_cores(cores)
    if busy is None:
        return ThreadChoice(TORCH_DEFAULT_THREADS, "torch's default")
    idle = max(1, min(TORCH_DEFAULT_THREADS, len(cores) - round(busy)))
    return ThreadChoice(idle, f"auto: {busy:.1f} of {len(cores)} cores busy")


def choose_workers(requested: int | str) -> int:
    """DataLoader workers for ``data.workers``: N as given; ``auto`` one per usable core, at most
    :data:`MAX_AUTO_WORKERS`. The workers only decode files (augmentation runs batch-wise after), so their count
    never changes what trains."""
    if isinstance(requested, int):
        return requested
    if requested != "auto":
        raise ConfigError(f"data.workers must be auto or a count >= 0, got {requested!r}")
    return min(MAX_AUTO_WORKERS, len(usable_cores()))
