"""``dhm predict``: classify image files with a trained model, from any file a run or an export writes (read by
:func:`dhm.deployed.load_deployed`, which also gives the class names, normalisation and input size)."""

from __future__ import annotations

from pathlib import Path

import torch

from .deployed import Deployed, load_deployed
from .gallery.images import decode, list_images

__all__ = ["Deployed", "load_deployed", "load_images", "predict"]


def load_images(paths: list[str | Path], input_size: list[int]) -> tuple[list[Path], torch.Tensor]:
    """Image files (folders are searched recursively) as a uint8 (N, C, H, W) batch at the model's input size
    (:mod:`dhm.gallery.images`)."""
    files = list_images(paths)
    return files, decode(files, input_size)


@torch.no_grad()
def predict(deployed: Deployed, images: torch.Tensor, k: int = 5, batch: int = 256) -> list[list[tuple[str, float]]]:
    """Top-``k`` (class name, probability) per image of a uint8 (N, C, H, W) batch."""
    mean = torch.tensor(deployed.mean).view(1, -1, 1, 1)
    std = torch.tensor(deployed.std).view(1, -1, 1, 1)
    names = deployed.classes or [str(i) for i in range(deployed.model(images[:1].float()).shape[-1])]
    k = max(1, min(k, len(names)))
    out = []
    for start in range(0, len(images), batch):
        x = (images[start : start + batch].float() / 255 - mean) / std
        probs = deployed.model(x).float().softmax(-1)
        top = probs.topk(k, dim=-1)
        out += [
            [(names[i], p) for i, p in zip(idx.tolist(), val.tolist())] for idx, val in zip(top.indices, top.values)
        ]
    return out
