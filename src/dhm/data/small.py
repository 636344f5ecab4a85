"""Datasets that need no files: scikit-learn's bundled handwritten digits and a learnable synthetic set."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..config.schema import DataConfig
from .registry import register_dataset
from .sizes import square
from .sources import Bundle, TensorSource

DIGITS_TEST_FRACTION = 0.2  # sklearn's digits has no official test split: a fixed 20% (seed 0) is held out


@register_dataset("digits")
def digits(cfg: DataConfig) -> Bundle:
    """The 1,797 real 8x8 handwritten digits bundled with scikit-learn, upscaled (default 32x32), 1 channel."""
    from sklearn.datasets import load_digits

    raw = load_digits()
    images = torch.as_tensor(raw.images, dtype=torch.float32)[:, None] * (255.0 / 16.0)
    size = square(cfg.image_size, "digits") or 32
    images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
    images = images.round().clamp(0, 255).to(torch.uint8)
    labels = torch.as_tensor(raw.target, dtype=torch.int64)
    perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    n_test = int(round(DIGITS_TEST_FRACTION * len(labels)))
    full = TensorSource(images, labels)
    return Bundle(
        train=full.subset(perm[n_test:].sort().values),
        test=full.subset(perm[:n_test].sort().values),
        classes=[str(d) for d in range(10)],
        channels=1,
    )


@dataclass
class SyntheticOptions:
    """``data.options.*`` of ``synthetic``."""

    train_size: int = 4096  # training images
    test_size: int = 1024  # test images
    num_classes: int = 10  # classes


@register_dataset("synthetic", options=SyntheticOptions)
def synthetic(cfg: DataConfig) -> Bundle:
    """A deterministic, learnable set: each class is a smooth random pattern; images are a randomly shifted
    pattern plus pixel noise (3 channels, ``image_size`` default 32). Same data for every training seed."""
    g = torch.Generator().manual_seed(1234)
    options = cfg.options
    size, classes = square(cfg.image_size, "synthetic") or 32, options.num_classes
    templates = F.interpolate(torch.randn(classes, 3, 4, 4, generator=g), size=(size, size), mode="bicubic")

    def make(n: int) -> TensorSource:
        labels = torch.randint(0, classes, (n,), generator=g)
        shifts = torch.randint(-2, 3, (n, 2), generator=g)
        images = templates[labels]
        images = torch.stack([im.roll((int(dy), int(dx)), (1, 2)) for im, (dy, dx) in zip(images, shifts)])
        images = 128 + 80 * images + 25 * torch.randn(images.shape, generator=g)
        return TensorSource(images.round().clamp(0, 255).to(torch.uint8), labels)

    return Bundle(
        train=make(options.train_size),
        test=make(options.test_size),
        classes=[str(c) for c in range(classes)],
        channels=3,
    )
