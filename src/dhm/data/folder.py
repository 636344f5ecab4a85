"""Image folders: ``root/train/<class>/*`` and ``root/val/<class>/*`` (or ``test/``), e.g. ImageNet or the
extracted CIFAR-10 JPEG set. Streamed by DataLoader workers, or decoded once into memory (``data.in_memory``)."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from ..config.schema import DataConfig
from ..cpus import choose_workers
from ..errors import DataError
from ..memory import check_fits
from .decode import read_image
from .registry import register_dataset
from .sizes import image_hw
from .sources import Bundle, FileSource, TensorSource

EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".tif", ".tiff"}
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def scan(folder: Path, classes: list[str] | None = None) -> tuple[FileSource, list[str]]:
    """Files and labels of a class-per-subfolder tree; ``classes`` fixes the label order (from train)."""
    if not folder.is_dir():
        raise DataError(f"image folder {folder} does not exist")
    found = sorted(d.name for d in folder.iterdir() if d.is_dir())
    classes = classes if classes is not None else found
    files, labels = [], []
    for label, name in enumerate(classes):
        if not (folder / name).is_dir():
            continue
        for path in sorted((folder / name).rglob("*")):
            if path.suffix.lower() in EXTENSIONS:
                files.append(path)
                labels.append(label)
    if not files:
        raise DataError(f"no images found in {folder} (expected {folder}/<class>/<image>.jpg)")
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise DataError(f"{folder} has classes not in the training set: {', '.join(unknown[:5])}")
    return FileSource(files, torch.tensor(labels, dtype=torch.int64)), classes


def load_image(path: Path, size: int | Sequence[int] | None = None) -> np.ndarray:
    """An RGB image as a uint8 (H, W, 3) array (decoded by :func:`dhm.data.decode.read_image`), optionally resized
    to size x size (or [height, width]); DataError if unreadable."""
    from PIL import Image

    hw = image_hw(size)
    img = read_image(path)
    if hw is not None and img.size != (hw[1], hw[0]):
        img = img.resize((hw[1], hw[0]), Image.BILINEAR)
    return np.asarray(img)


def decode_all(source: FileSource, size: int | Sequence[int] | None, threads: int | str = "auto") -> TensorSource:
    """Every image of ``source`` decoded into one uint8 (N, 3, H, W) tensor (all must share a size)."""
    hw = image_hw(size)
    if hw is not None:  # the decoded tensor's size is known before decoding: refuse what cannot fit
        check_fits(
            len(source) * 3 * hw[0] * hw[1], f"{len(source):,} images at {hw[0]}x{hw[1]}", "reduce data.image_size"
        )
    start = time.perf_counter()
    if len(source) >= 1000 and os.environ.get("RANK", "0") == "0":  # a slow start-up phase: say so
        print(f"decoding {len(source):,} images from {source.files[0].parents[1]} into memory", flush=True)
    with ThreadPoolExecutor(max(1, choose_workers(threads))) as pool:
        arrays = list(pool.map(lambda p: load_image(p, size), source.files, chunksize=256))
    if len(source) >= 1000 and os.environ.get("RANK", "0") == "0":
        print(f"decoded {len(source):,} images in {time.perf_counter() - start:.1f} s", flush=True)
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        raise DataError(
            f"in-memory image folders need one image size; found {sorted(shapes)[:3]} (set data.image_size)"
        )
    images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    return TensorSource(images, source.labels, dict(source.meta))


@register_dataset("imagefolder", keys=("root", "in_memory", "image_size", "workers"))
def imagefolder(cfg: DataConfig) -> Bundle:
    """``root/train`` and ``root/val`` (or ``root/test``) class folders; 3 channels."""
    root = Path(cfg.root).expanduser()
    if not root.is_dir():
        raise DataError(f"data root {root} does not exist (expected {root}/train/<class>/...)")
    train, classes = scan(root / "train")
    test_dir = next((root / d for d in ("val", "test") if (root / d).is_dir()), root / "val")
    test, _ = scan(test_dir, classes)
    if cfg.in_memory:
        train, test = decode_all(train, cfg.image_size, cfg.workers), decode_all(test, cfg.image_size, cfg.workers)
        return Bundle(train=train, test=test, classes=classes, channels=3)
    return Bundle(train=train, test=test, classes=classes, channels=3, mean=IMAGENET_MEAN, std=IMAGENET_STD)
