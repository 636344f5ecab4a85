"""The one image decoder of training, evaluation, ``dhm predict``, ``dhm embed`` and ``dhm search``: a file becomes
an 8-bit RGB (or grey) PIL image the same way everywhere, 16-bit images scaled to 0..255 rather than clipped, and
images too large to decode safely (PIL's decompression-bomb limit) refused with one line."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError


def _bombs_are_errors() -> None:
    """PIL warns (on stderr) about images over its pixel limit and raises above twice that; make both an error
    dhm turns into one line. A process-wide filter, set again on each call (idempotent: the same filter replaces
    itself), because a context-local ``catch_warnings`` is not safe in the decoding threads."""
    from PIL import Image

    warnings.filterwarnings("error", category=Image.DecompressionBombWarning)


def to_8bit(img: Any, channels: int = 3) -> Any:
    """An opened PIL image as 8-bit RGB (``channels=3``) or grey (``channels=1``). 16-bit images (PNG modes I;16 /
    I) are scaled to 0..255 when they use the range above 255, not clipped at 255 as PIL's own conversion does."""
    from PIL import Image

    if img.mode.startswith("I;16") or img.mode == "I":
        values = np.asarray(img, dtype=np.float64)
        scale = 255.0 / 65535.0 if values.max(initial=0) > 255 else 1.0
        grey = np.clip(np.rint(values * scale), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, "L") if channels == 1 else Image.fromarray(np.stack([grey] * 3, -1), "RGB")
    return img.convert("L" if channels == 1 else "RGB")


def read_image(path: Path, channels: int = 3) -> Any:
    """The image file ``path`` decoded to an 8-bit PIL image (:func:`to_8bit`); DataError if it cannot be read or
    is larger than PIL's decompression-bomb limit."""
    from PIL import Image, UnidentifiedImageError

    _bombs_are_errors()
    try:
        with Image.open(path) as img:
            img.load()
            return to_8bit(img, channels)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise DataError(
            f"cannot read image {path}: more than {Image.MAX_IMAGE_PIXELS:,} pixels (PIL's limit against "
            "decompression bombs)"
        ) from None
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise DataError(f"cannot read image {path}: {exc}") from None
