"""The lines a run prints before its first epoch, so that its log says what it is: the data and its split sizes,
the classes (identities), the model with its heads and trained parameters, the method and its step, the precision
and why, threads and device."""

from __future__ import annotations

import platform
from typing import Any

import torch
from torch import nn

from ..branches import DHMModel, unwrap
from ..config import Config
from ..precision import native_bf16
from .parts import Parts
from .runtime import Runtime


def _size(loader: Any) -> int | None:
    source = getattr(loader, "source", None)
    return len(source) if source is not None else None


def _classes(parts: Parts, unit: str) -> str:
    """How many classes (identities) the training split holds: a validation carved by identity holds some out, while
    the classifier keeps an output for every one."""
    total = len(parts.meta.classes)
    labels = getattr(getattr(parts.train, "source", None), "labels", None)
    trained = int(torch.unique(labels).numel()) if isinstance(labels, torch.Tensor) else total
    if trained == total:
        return f"{total:,} training {unit}"
    if unit == "identities":  # the retrieval task carves its validation by identity
        return f"{trained:,} training {unit} ({total - trained:,} more held out for validation)"
    return f"{trained:,} training {unit} of the classifier's {total:,}"  # e.g. a subset that misses a class


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def precision_words(runtime: Runtime, requested: str) -> str:
    """``bf16 autocast`` / ``fp16 autocast`` / ``fp32``, with why where ``train.amp=auto`` chose fp32."""
    if runtime.amp != "off":
        return f"{runtime.amp} autocast"
    if requested == "auto" and not native_bf16(runtime.device):
        return "fp32 (train.amp=auto: this device has no native bf16)"
    return "fp32"


def runtime_record(runtime: Runtime, requested_amp: str) -> dict[str, Any]:
    """How the run computes, for summary.json: device and its name, native bf16, precision and why, memory format,
    compile mode, CPU threads and why, processes."""
    device = runtime.device
    return {
        "device": str(device),
        "device_name": _cpu_name() if device.type == "cpu" else torch.cuda.get_device_name(device),
        "native_bf16": native_bf16(device),
        "amp": runtime.amp,
        "precision": precision_words(runtime, requested_amp),
        "channels_last": runtime.channels_last,
        "compile": runtime.compile_mode or "off",
        "threads": runtime.threads.threads,
        "threads_why": runtime.threads.why,
        "processes": runtime.dist.world,
    }


def run_header(cfg: Config, parts: Parts, runtime: Runtime) -> list[str]:
    """The header's lines (see the module docstring)."""
    sizes = {"train": _size(parts.train), **{name: _size(loader) for name, loader in parts.splits.items()}}
    splits = " / ".join(f"{name} {n:,}" for name, n in sizes.items() if n is not None)
    unit = "identities" if cfg.train.task == "retrieval" else "classes"
    model: nn.Module = unwrap(parts.model)
    heads = model.head_names if isinstance(model, DHMModel) else ("main",)
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    branches = cfg.model.branches if isinstance(cfg.model.branches, str) else f"{len(cfg.model.branches)} specs"
    run = runtime_record(runtime, cfg.train.amp)
    layout = ", channels_last" if run["channels_last"] else ""
    compiled = f", torch.compile ({run['compile']})" if run["compile"] != "off" else ""
    return [
        f"data: {cfg.data.name} ({cfg.data.root}): {splits} images; {_classes(parts, unit)}",
        f"model: {cfg.model.name}, branches {branches} (heads {', '.join(heads)}), {trained / 1e6:.2f} M trained "
        "parameters",
        f"method: {cfg.loss.mode} (step {parts.step}), task {cfg.train.task}, "
        f"{cfg.train.epochs} epoch{'s' if cfg.train.epochs != 1 else ''}",
        f"precision: {run['precision']}{layout}{compiled}; {run['threads']} CPU thread(s) ({run['threads_why']}); "
        f"device {run['device']} ({run['device_name']}); {run['processes']} process(es)",
    ]
