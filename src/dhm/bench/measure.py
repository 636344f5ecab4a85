"""Measurements of one setting: a training step's time and memory, FLOPs, inference, the data path, the engine."""

from __future__ import annotations

import platform
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from ..branches import BranchSpec, DHMModel, strip
from ..engine.compiling import compile_model, records_cuda_graphs, resolve_compile
from ..losses import MimicLoss
from ..models import create_model, paper_branches
from ..precision import autocast
from ..steps import EagerStep
from ..tasks import get_task
from ..version import __version__

PRECISIONS = {"fp32": "off", "bf16": "bf16", "fp16": "fp16"}

# Dense (no sparsity) bf16 tensor-core peaks from the vendors' datasheets (SXM parts), TFLOP/s, by device name.
PEAK_BF16_TFLOPS = {"H200": 989.4, "H100": 989.4, "A100": 312.0, "L40S": 362.1, "A10G": 70.0, "L4": 121.0}


def peak_bf16_tflops(device: torch.device) -> float | None:
    """The datasheet dense bf16 peak of ``device`` (None where unknown, e.g. CPUs)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_BF16_TFLOPS.items() if key in name), None)


@dataclass
class Case:
    """One measured setting."""

    suite: str
    model: str
    mode: str = "dhm"
    precision: str = "fp32"
    memory_format: str = "nchw"
    compile: bool | str = False  # False, True (default mode) or a torch.compile mode such as reduce-overhead
    batch: int = 128
    branches: int = 2  # paper branches kept (3 = paper + one more, see ``branch_specs``)
    extra: dict[str, Any] = field(default_factory=dict)


def branch_specs(model: str, count: int) -> list[BranchSpec]:
    """The first ``count`` paper branches; a third one is a 1x-width copy of the last stage after the
    second-to-last (the paper's figure draws three heads)."""
    paper = list(paper_branches(model))
    if count <= len(paper):
        return paper[:count]
    head1 = paper[0]
    return paper + [BranchSpec(head1.fork, head1.depths, 1.0)] * (count - len(paper))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _inputs(model: str, batch: int, classes: int, device: torch.device, channels_last: bool) -> tuple[Tensor, Tensor]:
    size = 224 if model.startswith("resnet") else 32
    x = torch.randn(batch, 3, size, size, device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, torch.randint(0, classes, (batch,), device=device)


def _build(case: Case, classes: int, device: torch.device) -> nn.Module:
    branches = "none" if case.mode == "ce" or case.branches == 0 else branch_specs(case.model, case.branches)
    model = create_model(case.model, num_classes=classes, branches=branches).to(device)
    return model.to(memory_format=torch.channels_last) if case.memory_format == "channels_last" else model


def _time(fn, steps: int, warmup: int, device: torch.device) -> list[float]:
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return times


def saved_activation_bytes(fn) -> int:
    """Bytes of the tensors autograd saves for backward during ``fn()`` (what dominates training memory)."""
    total = 0

    def pack(t: Tensor) -> Tensor:
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return total


def train_step_fn(model: nn.Module, case: Case, x: Tensor, y: Tensor, device: torch.device):
    """One optimizer step of ``case`` on a fixed batch: the engine's own step (:class:`~dhm.dhm.steps.EagerStep`:
    forward, loss, backward, SGD update, the step's meters) without the loop, loader or schedule around it."""
    loss_fn = MimicLoss(mode=case.mode).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    mode = resolve_compile(case.compile)
    forward = compile_model(model, mode)
    graphs = records_cuda_graphs(mode, device)
    amp = PRECISIONS[case.precision]
    scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16")
    counters = get_task("classification").step_counters  # what the engine's step counts, as in training
    run = EagerStep(forward, loss_fn, optimizer, scaler, amp, device, counters=counters)
    model.train()

    def step() -> None:
        if graphs:
            torch.compiler.cudagraph_mark_step_begin()
        run(x, y)

    return step, forward, loss_fn, amp


def measure_train(case: Case, classes: int, device: torch.device, steps: int, warmup: int) -> dict[str, Any]:
    torch.manual_seed(0)
    model = _build(case, classes, device)
    x, y = _inputs(case.model, case.batch, classes, device, case.memory_format == "channels_last")
    step, _, loss_fn, amp = train_step_fn(model, case, x, y, device)
    times = _time(step, steps, warmup + (3 if case.compile else 0), device)
    median = statistics.median(times)
    row = {
        "ms_per_step": 1000 * median,
        "images_per_s": case.batch / median,
        "images_per_s_mean": case.batch / statistics.mean(times),  # like for like with the engine's epoch figure
        "ms_iqr": 1000 * (statistics.quantiles(times, n=4)[2] - statistics.quantiles(times, n=4)[0])
        if len(times) >= 4
        else 0.0,
    }
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        step()
        _sync(device)
        row["peak_memory_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    else:

        def fwd() -> None:
            with autocast(device, amp):
                loss_fn(model(x), y)["loss"].backward()

        params = sum(p.numel() * p.element_size() for p in model.parameters())
        row["saved_activations_mb"] = saved_activation_bytes(fwd) / 2**20
        row["param_grad_momentum_mb"] = 3 * params / 2**20
        model.zero_grad(set_to_none=True)
    return row


def count_flops(case: Case, classes: int, device: torch.device) -> int:
    """FLOPs of one training step (forward + backward) at fp32, counted by torch.utils.flop_counter."""
    model = _build(Case(**{**asdict(case), "compile": False, "memory_format": "nchw"}), classes, device)
    x, y = _inputs(case.model, case.batch, classes, device, False)
    loss_fn = MimicLoss(mode=case.mode)
    model.train()
    with FlopCounterMode(display=False) as counter:
        loss_fn(model(x), y)["loss"].backward()
    return counter.get_total_flops()


def measure_inference(
    model_name: str,
    classes: int,
    batch: int,
    device: torch.device,
    steps: int,
    warmup: int,
    precision: str,
    memory_format: str,
) -> list[dict[str, Any]]:
    """Eval throughput: the plain backbone, the stripped branched model (must be equal) and every head."""
    torch.manual_seed(0)
    branched = _build(Case("inference", model_name, memory_format=memory_format), classes, device).eval()
    plain = create_model(model_name, num_classes=classes, branches="none").to(device).eval()
    if memory_format == "channels_last":
        plain = plain.to(memory_format=torch.channels_last)
    stripped = strip(branched)
    x, _ = _inputs(model_name, batch, classes, device, memory_format == "channels_last")
    amp = PRECISIONS[precision]
    rows = []
    runs = {"plain backbone": plain, "stripped DHM model": stripped, "DHM model, eval mode": branched}
    for name, module in runs.items():
        with torch.inference_mode(), autocast(device, amp):
            times = _time(lambda m=module: m(x), steps, warmup, device)
        rows.append({"what": name, "images_per_s": batch / statistics.median(times)})
    assert isinstance(branched, DHMModel)
    with torch.inference_mode(), autocast(device, amp):
        times = _time(lambda: branched.forward_heads(x), steps, warmup, device)
    rows.append({"what": "every head (forward_heads)", "images_per_s": batch / statistics.median(times)})
    return rows


def measure_data(batch: int, device: torch.device, channels_last: bool, steps: int) -> dict[str, Any]:
    """Throughput of the in-memory data path alone: index, pad-crop, flip, normalise a CIFAR-shaped batch."""
    from ..data import TensorSource, build_loader

    n = batch * steps
    source = TensorSource(torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8), torch.randint(0, 100, (n,)))
    loader = build_loader(
        source,
        train=True,
        batch_size=batch,
        augment="cifar",
        mean=(0.5,) * 3,
        std=(0.25,) * 3,
        device=device,
        channels_last=channels_last,
    )
    _sync(device)
    start = time.perf_counter()
    for x, _ in loader:
        pass
    _sync(device)
    return {"what": "data path (in-memory, crop+flip+normalise)", "images_per_s": n / (time.perf_counter() - start)}


def measure_engine(case: Case, classes: int, device: str, steps: int) -> dict[str, Any]:
    """Images/s of the real engine's training epoch (loader, loss dict, meters, scheduler) on synthetic data, to
    compare with the bare step: the bookkeeping must not show."""
    from ..config import load_config
    from ..engine import build_trainer

    overrides = [
        f"model.name={case.model}",
        f"model.num_classes={classes}",
        "data.name=synthetic",
        f"data.options.num_classes={classes}",
        f"data.options.train_size={case.batch * steps}",
        "data.val_size=0",
        f"data.batch_size={case.batch}",
        f"loss.mode={case.mode}",
        "train.progress=false",
        f"train.amp={PRECISIONS[case.precision]}",
        f"train.channels_last={case.memory_format != 'nchw'}",
        f"train.compile={case.compile}",
        f"train.device={device}",
        "model.widths=null",
    ]
    trainer = build_trainer(load_config("smoke", overrides))  # no run directory: only fit() opens one
    model = trainer.wrap()
    trainer.train_one_epoch(model, 0)  # warm-up (and compilation)
    return {"engine_images_per_s": trainer.train_one_epoch(model, 1)["images_per_s"]}


def environment(device: torch.device) -> dict[str, Any]:
    env = {
        "device": str(device),
        "torch": torch.__version__,
        "dhm": __version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "processor": platform.processor() or platform.machine(),
    }
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env
