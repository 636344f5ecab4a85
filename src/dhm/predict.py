"""``dhm predict``: classify image files with a trained model, from any file a run or an export writes (read by
:func:`dhm.deployed.load_deployed`, which also gives the class names, normalisation and input size)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .data.augment import center_crop
from .data.decode import read_image
from .data.folder import EXTENSIONS
from .deployed import Deployed, load_deployed
from .errors import DataError

__all__ = ["Deployed", "load_deployed", "load_images", "predict"]


def load_images(paths: list[str | Path], input_size: list[int]) -> tuple[list[Path], torch.Tensor]:
    """Image files (folders are searched recursively) as a uint8 (N, C, H, W) batch at the model's input size:
    small and non-square inputs (CIFAR-like, re-ID) are resized, large square ones (ImageNet-like) resized and
    centre-cropped; decoded as training decodes (:func:`dhm.data.decode.read_image`)."""
    from PIL import Image

    files: list[Path] = []
    for item in map(Path, paths):
        if item.is_dir():
            files += sorted(p for p in item.rglob("*") if p.suffix.lower() in EXTENSIONS)
        elif item.is_file():
            files.append(item)
        else:
            raise DataError(f"{item} does not exist")
    if not files:
        raise DataError(f"no images found in {', '.join(map(str, paths))}")
    channels, height, width = input_size
    arrays = []
    for path in files:
        img = read_image(path, channels)  # training's decoding (16-bit scaled, bombs refused)
        if img.size != (width, height):
            crop = height >= 128 and height == width  # ImageNet-like; re-ID (non-square) is only resized
            img = center_crop(img, height) if crop else img.resize((width, height), Image.BILINEAR)
        arrays.append(np.asarray(img).reshape(height, width, channels))
    return files, torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


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
