"""``dhm bench``: what DHM costs. Training-step throughput and memory of ce / dsl / dhm across precision, memory
format and torch.compile; inference of the stripped model against the plain backbone; cost growth with the number
of branches and the batch size next to the FLOP ratio. One process, synthetic inputs on the device, medians of
timed steps after warm-up (synchronised on GPUs)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from ..engine.dist import pick_device
from .measure import (
    Case,
    count_flops,
    environment,
    measure_data,
    measure_engine,
    measure_inference,
    measure_train,
    peak_bf16_tflops,
)


def run_bench(
    model: str = "cifar_resnet32",
    classes: int = 100,
    batch: int = 128,
    suites: tuple[str, ...] = ("speed",),
    modes: tuple[str, ...] = ("ce", "dsl", "dhm"),
    precisions: tuple[str, ...] = ("fp32", "bf16"),
    formats: tuple[str, ...] = ("nchw", "channels_last"),
    compile_options: tuple[bool | str, ...] = (False, True),
    batches: tuple[int, ...] = (32, 64, 128, 256),
    steps: int = 10,
    warmup: int = 3,
    device: str = "auto",
    best: tuple[str, str, bool | str] | None = None,
    engine: bool = True,
) -> dict[str, Any]:
    """Run the requested suites (``speed``, ``inference``, ``growth``) and return rows plus the environment.

    Example:
        >>> result = run_bench("cifar_resnet32", suites=("speed",), steps=5)
        >>> print(to_markdown(result))
    """
    dev = pick_device(device)
    rows: list[dict[str, Any]] = []
    if "speed" in suites:
        for precision in precisions:
            for fmt in formats:
                for compiled in compile_options:
                    for mode in modes:
                        case = Case("speed", model, mode, precision, fmt, compiled, batch)
                        rows.append({**asdict(case), **measure_train(case, classes, dev, steps, warmup)})
        flops = {m: count_flops(Case("speed", model, m, batch=batch), classes, dev) for m in modes}
        peak = peak_bf16_tflops(dev)
        for row in rows:
            row["gflops_per_step"] = flops[row["mode"]] / 1e9
            row["tflops"] = row["gflops_per_step"] * row["images_per_s"] / row["batch"] / 1e3  # achieved FLOP/s
            if peak:
                row["peak_bf16_fraction"] = row["tflops"] / peak
        slowest = next(r for r in rows if r["mode"] == modes[-1])
        fastest = max((r for r in rows if r["mode"] == modes[-1]), key=lambda r: r["images_per_s"])
        for row in (slowest, fastest) if engine else ():
            row.update(measure_engine(Case(**{k: row[k] for k in asdict(Case("", ""))}), classes, device, steps))
        for row in rows:
            row["speedup"] = row["images_per_s"] / next(
                r["images_per_s"] for r in rows if r["mode"] == row["mode"]
            )  # against the first setting
        best = best or (fastest["precision"], fastest["memory_format"], fastest["compile"])
    if "inference" in suites:
        precision, fmt, _ = best or ("fp32", "nchw", False)
        rows.append(
            {
                "suite": "inference",
                "model": model,
                "batch": batch,
                **measure_data(batch, dev, fmt == "channels_last", steps * 2),
            }
        )
        for row in measure_inference(model, classes, batch, dev, steps * 2, warmup, precision, fmt):
            rows.append(
                {
                    "suite": "inference",
                    "model": model,
                    "precision": precision,
                    "memory_format": fmt,
                    "batch": batch,
                    **row,
                }
            )
    if "growth" in suites:
        precision, fmt, compiled = best or ("fp32", "nchw", False)

        def against_plain(cases: list[Case]) -> list[dict[str, Any]]:
            """Rows of ``cases`` with time and FLOP ratios to the first (plain) case."""
            out = [
                {
                    **asdict(c),
                    **measure_train(c, classes, dev, steps, warmup),
                    "gflops_per_step": count_flops(c, classes, dev) / 1e9,
                }
                for c in cases
            ]
            for row in out:
                row["time_ratio"] = row["ms_per_step"] / out[0]["ms_per_step"]
                row["flop_ratio"] = row["gflops_per_step"] / out[0]["gflops_per_step"]
            return out

        rows += against_plain(
            [Case("growth", model, "ce" if k == 0 else "dhm", precision, fmt, compiled, batch, k) for k in range(4)]
        )
        for b in batches:
            rows += against_plain(
                [Case("growth-batch", model, m, precision, fmt, compiled, b, k) for m, k in (("ce", 0), ("dhm", 2))]
            )
    return {"environment": environment(dev), "model": model, "classes": classes, "best": best, "rows": rows}
