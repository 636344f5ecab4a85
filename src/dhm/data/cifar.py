"""CIFAR-10 and CIFAR-100 in the original python-pickle tarball format, read straight from the tarball (or from
its extracted folder), md5-verified, optionally downloaded from the official URL."""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import tarfile
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..config.schema import DataConfig
from ..errors import DataError
from .registry import register_dataset
from .sources import Bundle, TensorSource


@dataclass(frozen=True)
class CifarFormat:
    archive: str  # tarball name
    folder: str  # top folder inside it
    md5: str  # of the official tarball
    train: tuple[str, ...]
    test: str
    meta: str
    label_key: bytes
    names_key: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @property
    def url(self) -> str:
        return f"https://www.cs.toronto.edu/~kriz/{self.archive}"


FORMATS = {
    "cifar10": CifarFormat(
        "cifar-10-python.tar.gz",
        "cifar-10-batches-py",
        "c58f30108f718f92721af3b95e74349a",
        tuple(f"data_batch_{i}" for i in range(1, 6)),
        "test_batch",
        "batches.meta",
        b"labels",
        "label_names",
        (0.4914, 0.4822, 0.4465),
        (0.2470, 0.2435, 0.2616),
    ),
    "cifar100": CifarFormat(
        "cifar-100-python.tar.gz",
        "cifar-100-python",
        "eb9058c3a382ffc7106e4002c42a8d85",
        ("train",),
        "test",
        "meta",
        b"fine_labels",
        "fine_label_names",
        (0.5071, 0.4865, 0.4409),
        (0.2673, 0.2564, 0.2762),
    ),
}


def md5sum(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download(url: str, dest: Path, md5: str) -> None:
    """Fetch ``url`` to ``dest`` atomically, refusing a file whose md5 differs."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=dest.name, suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as response:
            for chunk in iter(lambda: response.read(1 << 20), b""):
                out.write(chunk)
        if md5sum(Path(tmp)) != md5:
            raise DataError(f"downloaded {url} has the wrong md5 (expected {md5})")
        os.replace(tmp, dest)
    except OSError as exc:
        raise DataError(f"cannot download {url}: {exc} (offline? put {dest.name} in {dest.parent})") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


# The only globals a CIFAR batch pickle refers to: numpy's array and dtype reconstruction (numpy 1 and 2 module
# paths, pickle protocols 2-5) and the codec python 3 uses for bytes at protocol 2. Anything else is refused, so a
# crafted file can never run code (pickle would call any global it names).
SAFE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


class _CifarUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` that resolves only ``SAFE_GLOBALS``."""

    def find_class(self, module: str, name: str):
        if (module, name) not in SAFE_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: not part of a CIFAR batch")
        return super().find_class(module, name)


def _unpickle(blob: bytes, where: str) -> dict:
    try:
        return _CifarUnpickler(io.BytesIO(blob), encoding="bytes").load()
    except Exception as exc:  # pickle raises many types on corrupt or crafted input
        raise DataError(f"corrupt CIFAR batch {where}: {type(exc).__name__}: {exc}") from None


def _members(root: Path, fmt: CifarFormat, verify_md5: bool) -> dict[str, bytes]:
    names = (*fmt.train, fmt.test, fmt.meta)
    folder = root / fmt.folder
    if folder.is_dir():
        missing = [n for n in names if not (folder / n).is_file()]
        if missing:
            raise DataError(f"{folder} lacks {', '.join(missing)}")
        return {n: (folder / n).read_bytes() for n in names}
    archive = root / fmt.archive
    if verify_md5 and md5sum(archive) != fmt.md5:
        raise DataError(
            f"{archive} has the wrong md5 (expected {fmt.md5}): corrupt or incomplete; delete it and "
            f"download again (or set data.verify_md5=false for a non-official archive)"
        )
    try:
        with tarfile.open(archive, "r:gz") as tar:
            return {n: tar.extractfile(f"{fmt.folder}/{n}").read() for n in names}
    except (tarfile.TarError, KeyError, OSError, EOFError, AttributeError) as exc:
        raise DataError(f"corrupt CIFAR archive {archive}: {type(exc).__name__}: {exc}") from None


def _source(blobs: list[tuple[str, bytes]], fmt: CifarFormat) -> TensorSource:
    images, labels = [], []
    for name, blob in blobs:
        batch = _unpickle(blob, name)
        if b"data" not in batch or fmt.label_key not in batch:
            raise DataError(f"CIFAR batch {name} lacks 'data' or {fmt.label_key.decode()!r}")
        images.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        labels.append(np.asarray(batch[fmt.label_key], dtype=np.int64))
    return TensorSource(torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(labels)))


def read_cifar(name: str, cfg: DataConfig) -> Bundle:
    """CIFAR ``name`` from ``cfg.root`` (tarball or extracted folder); downloaded first if ``cfg.download``."""
    fmt = FORMATS[name]
    root = Path(cfg.root).expanduser()
    if not (root / fmt.folder).is_dir() and not (root / fmt.archive).is_file():
        if not cfg.download:
            raise DataError(
                f"{name}: neither {root / fmt.archive} nor {root / fmt.folder}/ exists "
                f"(set data.root, or data.download=true to fetch {fmt.url})"
            )
        download(fmt.url, root / fmt.archive, fmt.md5)
    blobs = _members(root, fmt, cfg.verify_md5)
    meta = _unpickle(blobs[fmt.meta], fmt.meta)
    names = meta.get(fmt.names_key.encode(), meta.get(fmt.names_key, []))  # python-2 pickles have bytes keys
    classes = [c.decode() if isinstance(c, bytes) else c for c in names]
    return Bundle(
        train=_source([(n, blobs[n]) for n in fmt.train], fmt),
        test=_source([(fmt.test, blobs[fmt.test])], fmt),
        classes=classes or [str(i) for i in range(10 if name == "cifar10" else 100)],
        channels=3,
        mean=fmt.mean,
        std=fmt.std,
    )


@register_dataset("cifar10", keys=("root", "download", "verify_md5"))
def cifar10(cfg: DataConfig) -> Bundle:
    """CIFAR-10, python-pickle format."""
    return read_cifar("cifar10", cfg)


@register_dataset("cifar100", keys=("root", "download", "verify_md5"))
def cifar100(cfg: DataConfig) -> Bundle:
    """CIFAR-100 (fine labels), python-pickle format."""
    return read_cifar("cifar100", cfg)
