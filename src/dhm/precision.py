"""Mixed precision and memory format: what ``train.amp`` and ``train.channels_last`` mean, ``auto`` included.

``auto`` picks the fastest setting that is safe on the device: bf16 autocast where the hardware computes bf16
natively (CUDA with bf16 support; CPUs with AVX512-BF16 or AMX), and channels_last on CUDA and oneDNN CPUs. The
loss always computes softmax and log in float32 (``dhm.losses``)."""

from __future__ import annotations

import contextlib

import torch

from .errors import ConfigError

AMP_DTYPES = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 natively (emulated bf16 is slower than fp32)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        cpu = torch.cpu
        return bool(
            getattr(cpu, "_is_avx512_bf16_supported", lambda: False)()
            or getattr(cpu, "_is_amx_tile_supported", lambda: False)()
        )
    return False


def resolve_amp(amp: str, device: torch.device) -> str:
    """``train.amp`` as one of ``off``, ``bf16``, ``fp16``."""
    if amp == "auto":
        return "bf16" if native_bf16(device) else "off"
    if amp not in AMP_DTYPES:
        raise ConfigError(f"train.amp must be auto, {', '.join(AMP_DTYPES)}; got {amp!r}")
    return amp


def resolve_channels_last(value: bool | str, device: torch.device) -> bool:
    """``train.channels_last`` as a bool."""
    if value == "auto":
        return device.type == "cuda" or (device.type == "cpu" and torch.backends.mkldnn.is_available())
    if isinstance(value, bool):
        return value
    raise ConfigError(f"train.channels_last must be auto, true or false; got {value!r}")


def autocast(device: torch.device, amp: str, cache: bool = True) -> contextlib.AbstractContextManager:
    """Mixed precision context of a resolved ``amp`` (a no-op for ``off``); ``cache=False`` while capturing a
    CUDA graph (cached weight casts would outlive the capture)."""
    dtype = AMP_DTYPES[amp]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype, cache_enabled=cache)
