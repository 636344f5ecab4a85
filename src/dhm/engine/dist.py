"""torchrun-aware process setup: rank, world size, device, process group, seeding. Rank 0 does the side effects."""

from __future__ import annotations

import os
import random
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as torch_dist

from ..errors import ConfigError


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def pick_device(spec: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> the local accelerator (CUDA, else MPS) or the CPU; otherwise the named device."""
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank)
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(spec)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device={spec}: this PyTorch sees no CUDA device (torch.cuda.is_available() is False)")
    if device.type == "cuda" and device.index >= torch.cuda.device_count():
        raise ConfigError(f"train.device={spec}: only {torch.cuda.device_count()} CUDA device(s) here")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError(f"train.device={spec}: MPS is not available here")
    return device


def info(device_spec: str = "auto") -> DistInfo:
    """This process's place in the launch, from torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``);
    a plain ``python``/``dhm`` call is a world of one. Joins nothing: with several processes the entry point must
    have called :func:`setup` (the ``dhm`` command does)."""
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(device_spec, local_rank)
    if world > 1 and not torch_dist.is_initialized():
        raise ConfigError(
            f"WORLD_SIZE={world} but this process has joined no process group: call dhm.engine.dist.setup() "
            "in the launched script before training (the dhm command does)"
        )
    return DistInfo(rank, world, local_rank, device)


def setup(device_spec: str = "auto") -> DistInfo:
    """For an entry point: select the device and, under torchrun, join the process group (nccl on CUDA, gloo
    otherwise). Pair it with :func:`teardown`."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = pick_device(device_spec, int(os.environ.get("LOCAL_RANK", "0")))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world > 1 and not torch_dist.is_initialized():
        torch_dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return info(device_spec)


def teardown() -> None:
    """Leave the process group :func:`setup` joined (nothing in a world of one)."""
    if torch_dist.is_initialized():
        torch_dist.destroy_process_group()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over processes (identity in a world of one)."""
    if torch_dist.is_initialized():
        torch_dist.all_reduce(tensor)
    return tensor


def broadcast_buffers(module: torch.nn.Module) -> None:
    """Give every process rank 0's buffers (BatchNorm statistics): after training steps each rank holds its own,
    and what is evaluated and reported must be the model rank 0 saves (nothing in a world of one)."""
    if torch_dist.is_initialized():
        for buffer in module.buffers():
            torch_dist.broadcast(buffer, src=0)


def barrier() -> None:
    if torch_dist.is_initialized():
        torch_dist.barrier()


def seed_everything(seed: int, deterministic: bool) -> None:
    """Seed Python, NumPy and torch; ``deterministic`` also selects deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    else:
        torch.backends.cudnn.benchmark = True


def rng_state() -> dict:
    """Every RNG state a resumed run needs to continue the same random stream."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
