"""What ``train.compile`` means: off, torch.compile's default mode, or a named mode. ``reduce-overhead`` records
CUDA graphs (small CIFAR models are launch-bound on a GPU); on a CPU every mode compiles without graphs."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError
from .dist import DistInfo

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
#: ``train.compile=auto`` compiles runs of at least this many optimizer steps: compiling costs 30-60 s on 2 CPU
#: cores and saves about a fifth of a DHM step (BENCHMARKS.md), so shorter runs would lose time.
AUTO_MIN_STEPS = 5000


def resolve_compile(value: bool | str) -> str | None:
    """``train.compile`` as ``None`` (eager), a torch.compile mode name, or ``"auto"`` (decided by
    :func:`auto_compile` once the run's length is known)."""
    if value == "auto":
        return "auto"
    if value is False or value in ("off", "false"):
        return None
    if value is True or value in ("on", "true"):
        return "default"
    if value in COMPILE_MODES:
        return str(value)
    raise ConfigError(f"train.compile must be auto, true, false or one of {', '.join(COMPILE_MODES)}; got {value!r}")


def compiler_missing(device: torch.device) -> str | None:
    """Why torch.compile cannot build kernels for ``device`` here (no C++ compiler for CPU code, no Triton for
    CUDA), or None when it can."""
    import importlib.util
    import shutil

    if device.type == "cuda":
        return None if importlib.util.find_spec("triton") is not None else "Triton is not installed"
    if device.type == "cpu":
        found = any(shutil.which(c) for c in ("c++", "g++", "clang++"))
        return None if found else "no C++ compiler (c++, g++ or clang++) is on the PATH"
    return f"dhm does not compile for {device.type} devices"


def _has_amx() -> bool:
    """Whether this CPU has AMX tiles for bf16 (Linux ``/proc/cpuinfo`` flag ``amx_bf16``)."""
    try:
        with open("/proc/cpuinfo") as f:
            return "amx_bf16" in f.read()
    except OSError:
        return False


def auto_compile(mode: str | None, total_steps: int, device: torch.device, amp: str = "off") -> tuple[str | None, str]:
    """``train.compile=auto`` decided for a run of ``total_steps`` optimizer steps on ``device`` in precision
    ``amp``: the default mode for long runs where a compiler is present and compiling was measured to pay, else
    eager; with the reason, for the run's log. Other values pass through. On CPUs compiled bf16 paid with AMX
    (+23%, Intel Xeon) but not without it (-8%, AMD EPYC with AVX512-BF16; BENCHMARKS.md), so a bf16 run on a CPU
    without AMX stays eager; compiled fp32 paid on both (+15-23%)."""
    if mode != "auto":
        return mode, ""
    if total_steps < AUTO_MIN_STEPS:
        return None, ""  # short runs stay eager, silently: the common case
    if device.type == "cpu" and amp == "bf16" and not _has_amx():
        return None, "train.compile=auto: eager (compiled bf16 was slower on CPUs without AMX; BENCHMARKS.md)"
    missing = compiler_missing(device)
    if missing is not None:
        return None, f"train.compile=auto: eager, because {missing}"
    return "default", f"train.compile=auto: compiling, a run of {total_steps:,} steps amortises it"


def compile_model(model: nn.Module, mode: str | None) -> nn.Module:
    """``model`` compiled in ``mode`` (the module itself when ``mode`` is None)."""
    if mode is None:
        return model
    return torch.compile(model, mode=None if mode == "default" else mode)


def wrap_model(model: nn.Module, mode: str | None, dist: DistInfo) -> nn.Module:
    """``model`` as the training steps run it: compiled in ``mode``, then wrapped in DDP in a world of several
    processes (compile first, then DDP, as timm does)."""
    model = compile_model(model, mode)
    if dist.distributed:
        ids = [dist.device.index] if dist.device.type == "cuda" else None
        model = nn.parallel.DistributedDataParallel(model, device_ids=ids)
    return model


def records_cuda_graphs(mode: str | None, device: torch.device) -> bool:
    """Whether the compiled model replays CUDA graphs (then each step must be marked, see the trainer)."""
    return device.type == "cuda" and mode in ("reduce-overhead", "max-autotune")
