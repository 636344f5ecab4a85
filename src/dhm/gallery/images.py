"""Image files for a deployed model: found (folders searched recursively) and decoded at the model's input size
as training decodes them, one batch at a time so that memory does not grow with the number of images."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from ..data.augment import center_crop
from ..data.decode import read_image
from ..data.folder import EXTENSIONS
from ..errors import DataError


def list_images(paths: Sequence[str | Path]) -> list[Path]:
    """The image files named by ``paths`` (files as given, folders searched recursively in sorted order)."""
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
    return files


def decode(files: Sequence[Path], input_size: Sequence[int]) -> torch.Tensor:
    """``files`` as a uint8 (N, C, H, W) batch at ``input_size`` (C, H, W): small and non-square inputs (CIFAR-like,
    re-ID) are resized, large square ones (ImageNet-like) resized and centre-cropped; decoded as training decodes
    (:func:`dhm.data.decode.read_image`: 16-bit images scaled, decompression bombs refused)."""
    from PIL import Image

    channels, height, width = input_size
    arrays = []
    for path in files:
        img = read_image(path, channels)
        if img.size != (width, height):
            crop = height >= 128 and height == width  # ImageNet-like; re-ID (non-square) is only resized
            img = center_crop(img, height) if crop else img.resize((width, height), Image.BILINEAR)
        arrays.append(np.asarray(img).reshape(height, width, channels))
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def batches(files: Sequence[Path], input_size: Sequence[int], size: int) -> Iterator[torch.Tensor]:
    """``files`` decoded ``size`` at a time (uint8 batches, in order)."""
    for start in range(0, len(files), size):
        yield decode(files[start : start + size], input_size)
