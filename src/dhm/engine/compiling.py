"""What ``train.compile`` means: off, torch.compile's default mode, or a named mode. ``reduce-overhead`` records
CUDA graphs (small CIFAR models are launch-bound on a GPU); on a CPU every mode compiles without graphs."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError
from .dist import DistInfo

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def resolve_compile(value: bool | str) -> str | None:
    """``train.compile`` as ``None`` (eager) or a torch.compile mode name."""
    if value is False or value in ("off", "false"):
        return None
    if value is True or value in ("on", "true"):
        return "default"
    if value in COMPILE_MODES:
        return str(value)
    raise ConfigError(f"train.compile must be true, false or one of {', '.join(COMPILE_MODES)}; got {value!r}")


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
