"""Training images/s of the re-ID methods under one recipe (default: the BoT ResNet-50 of market1501/resnet50 at
256x128), through the engine's own pieces (the recipe's model with its BNNeck and last stride, the method's loss
terms, the recipe's optimizer, the engine's step with the resolved precision and memory format) on synthetic P x K
identity batches. Median of timed steps after warm-up; one process.

    python benchmarks/reid_speed.py --json benchmarks/results/cpu_reid_speed.json      # BoT alone (ce) and BoT + DHM (dhm)
    python benchmarks/reid_speed.py --tiny                                              # seconds (tests)
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from dhm.branches import DHMModel
from dhm.config import load_config
from dhm.data.sizes import image_hw
from dhm.engine.build import build_loss, build_model
from dhm.engine.optim import build_optimizer
from dhm.engine.runtime import resolve_runtime
from dhm.steps import EagerStep


def measure(recipe: str, method: str, batch: int, identities: int, steps: int, warmup: int, extra: list[str]) -> dict:
    """images/s (median step) and the parameters trained by ``method`` under ``recipe``."""
    cfg = load_config(recipe, [f"loss.mode={method}", "train.device=auto", *extra])
    runtime = resolve_runtime(cfg.train)
    device = runtime.device
    torch.manual_seed(0)
    model = build_model(cfg, identities, 3).to(device)
    if runtime.channels_last:
        model = model.to(memory_format=torch.channels_last)
    loss_fn = build_loss(cfg, model.head_names if isinstance(model, DHMModel) else None).to(device)
    optimizer = build_optimizer(model, cfg.optim)
    scaler = torch.amp.GradScaler(device.type, enabled=runtime.amp == "fp16")
    step = EagerStep(model, loss_fn, optimizer, scaler, runtime.amp, device)
    height, width = image_hw(cfg.data.image_size) or (256, 128)
    k = cfg.data.sampler_options.instances
    x = torch.randn(batch, 3, height, width, device=device)
    if runtime.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.arange(batch // k, device=device).repeat_interleave(k) % identities  # P identities x K images
    model.train()
    times = []
    for i in range(warmup + steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        step(x, y)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    median = statistics.median(times)
    return {
        "method": method,
        "images_per_s": batch / median,
        "s_per_step": median,
        "steps": steps,
        "params_trained_m": sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6,
        "amp": runtime.amp,
        "channels_last": runtime.channels_last,
        "input": [3, height, width],
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipe", default="market1501/resnet50")
    p.add_argument("--methods", default="ce,dhm")
    p.add_argument("--batch", type=int, default=16, help="images per step (P x K, K = data.sampler_options.instances)")
    p.add_argument("--identities", type=int, default=751, help="identity classes of the heads (Market: 751)")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--tiny", action="store_true", help="a seconds-long check of the script itself")
    p.add_argument("--json", default="")
    a = p.parse_args(argv)
    extra = []
    if a.tiny:
        extra = ["model.name=cifar_resnet20", "data.image_size=[32,16]"]
        a.batch, a.steps, a.warmup, a.identities = 8, 1, 1, 10
    rows = [measure(a.recipe, m, a.batch, a.identities, a.steps, a.warmup, extra) for m in a.methods.split(",")]
    for row in rows:
        row["cost_vs_first"] = rows[0]["images_per_s"] / row["images_per_s"]
    result = {
        "recipe": a.recipe,
        "batch": a.batch,
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
        "rows": rows,
    }
    print(json.dumps(result, indent=2))
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
