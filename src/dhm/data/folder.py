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
from ..errors import DataError
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


def rgb8(img):
    """An 8-bit RGB PIL image. 16-bit grey images (PNG mode I;16 / I) are scaled to 0..255, not clipped at 255 as
    PIL's own conversion does."""
    from PIL import Image

    if img.mode.startswith("I;16") or img.mode == "I":
        values = np.asarray(img, dtype=np.float64)
        scale = 255.0 / 65535.0 if values.max(initial=0) > 255 else 1.0
        grey = np.clip(np.rint(values * scale), 0, 255).astype(np.uint8)
        return Image.fromarray(np.stack([grey] * 3, axis=-1), "RGB")
    return img.convert("RGB")


def load_image(path: Path, size: int | Sequence[int] | None = None) -> np.ndarray:
    """An RGB image as a uint8 (H, W, 3) array, optionally resized to size x size (or [height, width]);
    DataError if unreadable."""
    from PIL import Image, UnidentifiedImageError

    hw = image_hw(size)
    try:
        with Image.open(path) as img:
            img = rgb8(img)
            if hw is not None and img.size != (hw[1], hw[0]):
                img = img.resize((hw[1], hw[0]), Image.BILINEAR)
            return np.asarray(img)
    except (OSError, UnidentifiedImageError) as exc:
        raise DataError(f"cannot read image {path}: {exc}") from None


def decode_all(source: FileSource, size: int | Sequence[int] | None, threads: int = 4) -> TensorSource:
    """Every image of ``source`` decoded into one uint8 (N, 3, H, W) tensor (all must share a size)."""
    start = time.perf_counter()
    if len(source) >= 1000 and os.environ.get("RANK", "0") == "0":  # a slow start-up phase: say so
        print(f"decoding {len(source):,} images from {source.files[0].parents[1]} into memory", flush=True)
    with ThreadPoolExecutor(max(1, threads)) as pool:
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
