"""The runtime of a run, resolved once at the entry point: the process's place in the launch and its device, mixed
precision, memory format, compile mode and whole-step graph capture. Everything below the entry point reads this
object and resolves nothing again; the checks here are the ones that need the device (device-free cross-field
checks are config validation rules, :mod:`dhm.config.validate`)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from ..config.schema import TrainConfig
from ..cpus import ThreadChoice, choose_threads
from ..errors import ConfigError
from ..precision import autocast, resolve_amp, resolve_channels_last
from . import dist as D
from .compiling import records_cuda_graphs, resolve_compile


@dataclass(frozen=True)
class Runtime:
    """How this process runs: ``dist`` (rank, world, device) and the resolved speed options."""

    dist: D.DistInfo
    amp: str  # off | bf16 | fp16
    channels_last: bool
    compile_mode: str | None  # None: eager
    cuda_graph: bool  # the whole step captured in one CUDA graph
    sync_bn: bool
    threads: ThreadChoice  # torch's CPU threads and why

    @property
    def device(self) -> torch.device:
        return self.dist.device

    @property
    def graphs(self) -> bool:
        """Whether the compiled model replays CUDA graphs (each step must then be marked)."""
        return records_cuda_graphs(self.compile_mode, self.dist.device)

    def autocast(self, cache: bool = True) -> contextlib.AbstractContextManager:
        return autocast(self.dist.device, self.amp, cache)


def resolve_runtime(train: TrainConfig, dist: D.DistInfo | None = None) -> Runtime:
    """Resolve ``train.*`` for this process (``dist`` default: from torchrun's environment, joining nothing);
    sets torch's CPU threads (``train.threads``, :mod:`dhm.cpus`)."""
    threads = choose_threads(train.threads)
    torch.set_num_threads(threads.threads)
    dist = dist or D.info(train.device)
    runtime = Runtime(
        dist=dist,
        amp=resolve_amp(train.amp, dist.device),
        channels_last=resolve_channels_last(train.channels_last, dist.device),
        compile_mode=resolve_compile(train.compile),
        cuda_graph=train.cuda_graph,
        sync_bn=train.sync_bn,
        threads=threads,
    )
    if runtime.cuda_graph and runtime.graphs:
        raise ConfigError("train.cuda_graph=true captures the step itself: use it with train.compile=true or false")
    if runtime.sync_bn and dist.device.type != "cuda":
        raise ConfigError("train.sync_bn=true needs CUDA devices (PyTorch's SyncBatchNorm has no CPU kernel)")
    return runtime
