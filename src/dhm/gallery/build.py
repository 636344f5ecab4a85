"""Building a gallery index: image files embedded in batches (memory bounded by the batch, not the gallery), with
progress, the model's fingerprint and the identities and cameras that Market-style names carry."""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from ..data.reid import MARKET_NAME
from ..deployed import Deployed
from ..memory import release_freed_memory
from .embedding import embed
from .images import batches, list_images
from .index import GalleryIndex, Settings

DTYPES = {"float16": torch.float16, "float32": torch.float32}


def fingerprint(deployed: Deployed) -> str:
    """sha256 of the deployed model's spec and weights: two files of the same weights share it."""
    digest = hashlib.sha256(json.dumps(deployed.payload.get("model"), sort_keys=True, default=str).encode())
    for name, tensor in sorted(deployed.model.state_dict().items()):
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def settings_of(deployed: Deployed, flip: bool) -> Settings:
    """The embedding settings of ``deployed`` applied with ``flip``."""
    return Settings(
        fingerprint(deployed),
        bool(flip),
        tuple(int(v) for v in deployed.input_size),
        tuple(float(v) for v in deployed.mean),
        tuple(float(v) for v in deployed.std),
    )


def names_of(files: Sequence[Path]) -> tuple[torch.Tensor, torch.Tensor]:
    """Identities and cameras of Market-style names (``0002_c1s1_000451_03.jpg``: id 2, camera 1); else the
    identity of a numbered identity folder (``gallery/0042/any.png``: id 42, camera unknown); -1 where unknown."""
    ids, cams = [], []
    for path in files:
        found = MARKET_NAME.match(path.name)
        folder = int(path.parent.name) if path.parent.name.isdigit() else -1
        ids.append(int(found.group(1)) if found else folder)
        cams.append(int(found.group(2)) if found else -1)
    return torch.tensor(ids, dtype=torch.int64), torch.tensor(cams, dtype=torch.int64)


def embed_files(
    deployed: Deployed, files: Sequence[Path], flip: bool = False, batch: int = 256, progress_s: float = 5.0
) -> torch.Tensor:
    """L2-normalised float32 embeddings (N, D) of ``files``, decoded and embedded ``batch`` images at a time; a
    progress line on stderr every ``progress_s`` seconds (0: none)."""
    out, done, start, shown = [], 0, time.perf_counter(), time.perf_counter()
    for images in batches(files, deployed.input_size, batch):
        out.append(embed(deployed, images, batch=batch, flip=flip))
        del images
        release_freed_memory()  # the decoded batch's pages: resident memory stays bounded by the batch
        done += len(out[-1])
        now = time.perf_counter()
        if progress_s and now - shown >= progress_s and done < len(files):
            rate = done / (now - start)
            print(f"embedded {done:,} / {len(files):,} images ({rate:.0f} images/s)", file=sys.stderr, flush=True)
            shown = now
    return torch.cat(out)


def build_index(
    deployed: Deployed, paths: Sequence[str | Path], flip: bool = False, dtype: str = "float16", batch: int = 256
) -> GalleryIndex:
    """A gallery index of the images named by ``paths`` (files, or folders searched recursively).

    Example:
        >>> index = build_index(dhm.load_deployed("deploy.pt"), ["gallery/"])
        >>> index.save("gallery.safetensors")
    """
    files = list_images(paths)
    feats = embed_files(deployed, files, flip=flip, batch=batch)
    ids, cams = names_of(files)
    resolved = [str(p.resolve()) for p in files]
    return GalleryIndex(feats.to(DTYPES[dtype]), resolved, settings_of(deployed, flip), ids, cams)
