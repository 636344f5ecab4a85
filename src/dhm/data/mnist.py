"""MNIST from the original IDX files (gzip-compressed or not), e.g. as downloaded from LeCun's site."""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np
import torch

from ..config.schema import DataConfig
from ..errors import DataError
from .registry import register_dataset
from .sources import Bundle, TensorSource

FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _find(root: Path, stem: str) -> Path:
    for folder in (root, root / "MNIST" / "raw", root / "raw"):
        for name in (f"{stem}.gz", stem):
            if (folder / name).is_file():
                return folder / name
    raise DataError(f"MNIST file {stem}(.gz) not found under {root} (set data.root to the folder holding it)")


def read_idx(path: Path, magic: int) -> np.ndarray:
    """The array in an IDX file; raises DataError when it is truncated or not IDX."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise DataError(f"corrupt MNIST file {path}: {exc}") from None
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header or struct.unpack(">I", raw[:4])[0] != magic:
        raise DataError(f"{path} is not an IDX file with magic {magic}")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    if len(raw) != header + int(np.prod(dims)):
        raise DataError(f"corrupt MNIST file {path}: {len(raw) - header} data bytes, header says {np.prod(dims)}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _split(root: Path, split: str) -> TensorSource:
    images_file, labels_file = (_find(root, stem) for stem in FILES[split])
    images, labels = read_idx(images_file, 2051), read_idx(labels_file, 2049)
    if len(images) != len(labels):
        raise DataError(f"MNIST {split}: {len(images)} images but {len(labels)} labels")
    return TensorSource(torch.from_numpy(images.copy())[:, None], torch.from_numpy(labels.astype(np.int64)))


@register_dataset("mnist", keys=("root",))
def mnist(cfg: DataConfig) -> Bundle:
    """MNIST, 28x28, 1 channel; normalised with the usual mean 0.1307 and std 0.3081."""
    root = Path(cfg.root).expanduser()
    if not root.is_dir():
        raise DataError(f"data root {root} does not exist (MNIST IDX files expected there)")
    return Bundle(
        train=_split(root, "train"),
        test=_split(root, "test"),
        classes=[str(d) for d in range(10)],
        channels=1,
        mean=(0.1307,),
        std=(0.3081,),
    )
