"""``dhm predict``: classify image files with a trained model, from any file a run or an export writes.

Every such file carries what prediction needs besides the weights: the class names, the normalisation (mean and
std) and the input size. Training checkpoints (``best.pt``, ``last.pt``) and ``deploy.pt`` / ``pt`` exports hold
them in the saved dict, ``safetensors`` exports in the file's metadata.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .data.augment import center_crop
from .data.folder import EXTENSIONS
from .errors import CheckpointError, DataError, DHMError, first_line

SAFETENSORS_META = "dhm_meta"  # safetensors metadata key: classes, mean, std, input_size, config (JSON)
SAFETENSORS_MODEL = "dhm_model"  # safetensors metadata key: the model spec (JSON)


@dataclass
class Deployed:
    """A plain backbone in eval mode and what its inputs and outputs mean."""

    model: nn.Module
    classes: list[str]
    mean: list[float]
    std: list[float]
    input_size: list[int]  # (C, H, W)
    config: dict[str, Any] = field(default_factory=dict)


def _build(spec: dict[str, Any], state: dict[str, torch.Tensor], what: str) -> nn.Module:
    from .engine.checkpoint import load_state
    from .models import create_model

    model = create_model(
        spec["name"],
        num_classes=spec["num_classes"],
        branches="none",
        in_channels=spec["in_channels"],
        **spec["kwargs"],
    )
    load_state(model, state, what)
    return model.eval()


def _load_safetensors(path: Path) -> Deployed:
    try:
        from safetensors import safe_open
        from safetensors.torch import load_file
    except ImportError:
        raise DHMError("reading safetensors files needs the safetensors package: pip install safetensors") from None
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        state = load_file(str(path))
    except Exception as exc:  # noqa: BLE001 - safetensors raises several types on foreign or corrupt files
        raise CheckpointError(f"cannot read {path}: {first_line(exc)}") from None
    if SAFETENSORS_MODEL not in meta:
        raise CheckpointError(f"{path} is not a dhm export (no {SAFETENSORS_MODEL!r} metadata)")
    info = json.loads(meta.get(SAFETENSORS_META, "{}"))
    model = _build(json.loads(meta[SAFETENSORS_MODEL]), state, f"export {path}")
    return _deployed(model, info, path)


def _deployed(model: nn.Module, info: dict[str, Any], path: Path) -> Deployed:
    missing = [k for k in ("mean", "std", "input_size") if not info.get(k)]
    if missing:
        raise CheckpointError(
            f"{path} does not carry {', '.join(missing)} (written by an older dhm); use the run's deploy.pt"
        )
    classes = list(info.get("classes") or [])
    return Deployed(
        model, classes, list(info["mean"]), list(info["std"]), list(info["input_size"]), info.get("config", {})
    )


def load_deployed(path: str | Path) -> Deployed:
    """The plain backbone and its metadata from ``best.pt`` / ``last.pt``, ``deploy.pt`` or a ``pt`` /
    ``safetensors`` export.

    Example:
        >>> deployed = load_deployed("runs/demo/20261126-101500/deploy.pt")
        >>> top = predict(deployed, ["digit.png"], k=3)
    """
    from .engine.export import load_deployable

    path = Path(path).expanduser()
    if path.suffix == ".safetensors":
        return _load_safetensors(path)
    model, payload = load_deployable(path)
    return _deployed(model, payload, path)


def load_images(paths: list[str | Path], input_size: list[int]) -> tuple[list[Path], torch.Tensor]:
    """Image files (folders are searched recursively) as a uint8 (N, C, H, W) batch at the model's input size:
    small inputs (CIFAR-like) are resized, large ones (ImageNet-like) resized and centre-cropped."""
    from PIL import Image, UnidentifiedImageError

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
        try:
            with Image.open(path) as img:
                img = img.convert("L" if channels == 1 else "RGB")
                if img.size != (width, height):
                    img = center_crop(img, height) if height >= 128 else img.resize((width, height), Image.BILINEAR)
                arrays.append(np.asarray(img).reshape(height, width, channels))
        except (OSError, UnidentifiedImageError) as exc:
            raise DataError(f"cannot read image {path}: {exc}") from None
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
