"""Markdown tables and JSON files of a benchmark result."""

from __future__ import annotations

import json
from typing import Any


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def to_markdown(result: dict[str, Any]) -> str:
    """Markdown tables of a ``run_bench`` result, one per suite."""
    env = result["environment"]
    out = [
        f"`{result['model']}`, {result['classes']} classes; {env['device']} ({env.get('gpu', env['processor'])}), "
        f"{env['threads']} threads, torch {env['torch']}, dhm {env['dhm']}",
        "",
    ]
    columns = {
        "speed": [
            "mode",
            "precision",
            "memory_format",
            "compile",
            "batch",
            "images_per_s",
            "speedup",
            "ms_per_step",
            "images_per_s_mean",
            "engine_images_per_s",
            "gflops_per_step",
            "tflops",
            "peak_bf16_fraction",
            "saved_activations_mb",
            "param_grad_momentum_mb",
            "peak_memory_mb",
        ],
        "inference": ["what", "precision", "memory_format", "batch", "images_per_s"],
        "growth": [
            "branches",
            "mode",
            "precision",
            "memory_format",
            "compile",
            "batch",
            "ms_per_step",
            "time_ratio",
            "flop_ratio",
        ],
        "growth-batch": ["batch", "mode", "branches", "ms_per_step", "images_per_s", "time_ratio", "flop_ratio"],
    }
    for suite, cols in columns.items():
        rows = [r for r in result["rows"] if r["suite"] == suite]
        if not rows:
            continue
        cols = [c for c in cols if any(c in r for r in rows)]
        out += [f"**{suite}**", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        out += ["| " + " | ".join(_fmt(r.get(c, "")) for c in cols) + " |" for r in rows]
        out.append("")
    return "\n".join(out)


def save(result: dict[str, Any], json_path: str | None, markdown_path: str | None) -> None:
    if json_path:
        with open(json_path, "w") as f:
            json.dump(result, f, indent=1)
    if markdown_path:
        with open(markdown_path, "w") as f:
            f.write(to_markdown(result) + "\n")
