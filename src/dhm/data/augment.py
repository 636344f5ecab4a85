"""Augmentation. Batch-wise on the training device for uint8 images (pad-crop, flip, random erasing); per-image in DataLoader
workers only where sizes vary (random resized crop). The random parameters of a whole epoch are drawn once, on the
training device, from a generator seeded by (seed, epoch), for every *global* batch, and sliced per process and
step: a run's augmentation does not depend on the number of processes, the accumulation steps or a resume, and
a training step never waits for the host."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ..registry import Registry


@dataclass(frozen=True)
class Preset:
    pad: int  # pad-and-crop shift in pixels (0 = none)
    flip: bool  # random horizontal flip
    resized_crop: bool  # per-image random resized crop in the loader workers (ImageNet style)
    erase: float = 0.0  # probability of random erasing (Zhong et al. 2020, as re-ID trains), batch-wise


ERASE_AREA = (0.02, 0.4)  # erased fraction of the image area (torchvision's and BoT's defaults)
ERASE_RATIO = (0.3, 3.3)  # height / width of the erased rectangle


AUGMENTS: Registry[Preset] = Registry("augmentation preset")
AUGMENTS.register("cifar")(Preset(pad=4, flip=True, resized_crop=False))
AUGMENTS.register("crop")(Preset(pad=4, flip=False, resized_crop=False))  # digits: no flips
AUGMENTS.register("flip")(Preset(pad=0, flip=True, resized_crop=False))
AUGMENTS.register("imagenet")(Preset(pad=0, flip=True, resized_crop=True))
AUGMENTS.register("none")(Preset(pad=0, flip=False, resized_crop=False))
AUGMENTS.register("reid")(Preset(pad=10, flip=True, resized_crop=False, erase=0.5))  # BoT: pad-10 crop, flip, erase


def step_seed(seed: int, epoch: int, step: int) -> int:
    """A 63-bit seed for one (seed, epoch, step) triple."""
    return (seed * 1_000_003 + epoch) * 1_000_003 + step & 0x7FFF_FFFF_FFFF_FFFF


def draw_params(preset: Preset, count: int, generator: torch.Generator) -> tuple[Tensor, ...]:
    """Crop offsets (dy, dx) in [0, 2 pad] and flip flags for ``count`` images, on the generator's device; with
    ``preset.erase`` also a (count, 5) tensor of erasing draws (whether, area fraction, log aspect, top and left
    as fractions), drawn after the others so that presets without erasing keep their stream."""
    device = generator.device
    shifts = torch.randint(0, 2 * preset.pad + 1, (2, count), generator=generator, device=device)
    flips = (
        torch.rand(count, generator=generator, device=device) < 0.5
        if preset.flip
        else torch.zeros(count, dtype=torch.bool, device=device)
    )
    if not preset.erase:
        return shifts[0], shifts[1], flips
    u = torch.rand(count, 5, generator=generator, device=device)
    lo, hi = math.log(ERASE_RATIO[0]), math.log(ERASE_RATIO[1])
    scale = torch.tensor([1.0, ERASE_AREA[1] - ERASE_AREA[0], hi - lo, 1.0, 1.0], device=device)
    shift = torch.tensor([0.0, ERASE_AREA[0], lo, 0.0, 0.0], device=device)
    erase = u * scale + shift
    erase[:, 0] = (u[:, 0] < preset.erase).float()
    return shifts[0], shifts[1], flips, erase


def random_erase(images: Tensor, erase: Tensor, fill: Tensor) -> Tensor:
    """Random erasing of a uint8 (N, C, H, W) batch from :func:`draw_params`' draws, filled with ``fill`` (C,
    uint8, the mean pixel): one rectangle of the drawn area and aspect per chosen image, clipped to the image."""
    _, _, h, w = images.shape
    erase = erase.to(images.device)
    area = erase[:, 1] * (h * w)
    aspect = erase[:, 2].exp()
    eh = (area * aspect).sqrt().round().clamp(1, h)
    ew = (area / aspect).sqrt().round().clamp(1, w)
    top = (erase[:, 3] * (h - eh + 1)).floor()
    left = (erase[:, 4] * (w - ew + 1)).floor()
    rows = torch.arange(h, device=images.device, dtype=torch.float32)[None, :, None]
    cols = torch.arange(w, device=images.device, dtype=torch.float32)[None, None, :]
    inside = (rows >= top[:, None, None]) & (rows < (top + eh)[:, None, None])
    inside = inside & (cols >= left[:, None, None]) & (cols < (left + ew)[:, None, None])
    inside = inside & (erase[:, 0] > 0)[:, None, None]
    return torch.where(inside[:, None], fill.view(1, -1, 1, 1).to(images.dtype), images)


def apply_batch(
    images: Tensor,
    preset: Preset,
    dy: Tensor,
    dx: Tensor,
    flips: Tensor,
    erase: Tensor | None = None,
    fill: Tensor | None = None,
) -> Tensor:
    """Pad-crop and flip a uint8 (N, C, H, W) batch with per-image parameters, in one gather; then random erasing
    with ``erase`` draws, filled with ``fill`` (the mean pixel, uint8)."""
    if preset.pad:
        n, c, h, w = images.shape
        padded = torch.nn.functional.pad(images, (preset.pad,) * 4)
        rows = (dy.to(images.device)[:, None] + torch.arange(h, device=images.device))[:, None, :, None]
        cols = (dx.to(images.device)[:, None] + torch.arange(w, device=images.device))[:, None, None, :]
        batch = torch.arange(n, device=images.device)[:, None, None, None]
        chans = torch.arange(c, device=images.device)[None, :, None, None]
        images = padded[batch, chans, rows, cols]
    if preset.flip:
        images = torch.where(flips.to(images.device)[:, None, None, None], images.flip(3), images)
    if erase is not None and fill is not None:
        images = random_erase(images, erase, fill)
    return images


def normalize(images: Tensor, mean: Tensor, std: Tensor, channels_last: bool) -> Tensor:
    """uint8 -> float32 ``(x / 255 - mean) / std``, optionally channels_last."""
    x = images.float().div_(255).sub_(mean).div_(std)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def random_resized_crop(img, size: int, rng: random.Random, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
    """The Inception-style crop (as torchvision's RandomResizedCrop), on a PIL image, resized to size x size."""
    from PIL import Image

    width, height = img.size
    area = width * height
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
        w, h = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            left, top = rng.randint(0, width - w), rng.randint(0, height - h)
            return img.resize((size, size), Image.BILINEAR, box=(left, top, left + w, top + h))
    return center_crop(img, size, 1.0)


def center_crop(img, size: int, crop_fraction: float = 0.875):
    """Resize the shorter side to size / crop_fraction, then crop the centre size x size (ImageNet eval)."""
    from PIL import Image

    width, height = img.size
    short = int(round(size / crop_fraction))
    scale = short / min(width, height)
    img = img.resize((max(size, round(width * scale)), max(size, round(height * scale))), Image.BILINEAR)
    left, top = (img.size[0] - size) // 2, (img.size[1] - size) // 2
    return img.crop((left, top, left + size, top + size))


def to_chw(img) -> Tensor:
    """A PIL RGB image as a uint8 (3, H, W) tensor."""
    return torch.from_numpy(np.asarray(img.convert("RGB")).copy()).permute(2, 0, 1)
