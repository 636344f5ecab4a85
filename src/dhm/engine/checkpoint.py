"""Training checkpoints of a run: what a resume reads, which config changes a resume accepts, and refusing a
checkpoint that belongs to another run. The file format itself (atomic writes, ``weights_only`` loading) is
:mod:`dhm.files`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import CheckpointError
from ..files import DEPLOY_FORMAT, FORMAT, REQUIRED, load_file, load_state, save_atomic, torch_load

__all__ = [
    "DEPLOY_FORMAT",
    "FORMAT",
    "REQUIRED",
    "RESUMABLE_CHANGES",
    "RESUME_NEEDS",
    "check_compatible",
    "identity_mismatch",
    "load_file",
    "load_state",
    "pack_numpy_rng",
    "save_atomic",
    "torch_load",
    "unpack_numpy_rng",
]

#: What resuming a run reads besides the model.
RESUME_NEEDS = ("optimizer", "scheduler", "scaler", "state", "rng")
# The config entries that may change when a run is resumed: how long, where, how it is shown and how fast it runs.
# Every other entry (data, augmentation, model, loss, optimizer, schedule, seed, precision) must be the saved one.
RESUMABLE_CHANGES = (
    "train.epochs",
    "train.resume",
    "train.out_dir",
    "train.runs_root",
    "train.overwrite",
    "train.progress",
    "train.log_every_s",
    "train.threads",
    "train.keep_every",
    "train.device",
    "train.compile",
    "train.cuda_graph",
    "train.channels_last",
    "data.root",
    "data.download",
    "data.verify_md5",
    "data.workers",
    "data.eval_batch_size",
)


def _get(cfg: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        cfg = cfg.get(part, {}) if isinstance(cfg, dict) else {}
    return cfg


def _flat(cfg: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in cfg.items():
        if isinstance(value, dict) and key != "options":
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def identity_mismatch(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Config keys (dotted) where a checkpoint's config and the current one differ in what is trained: every key
    except ``RESUMABLE_CHANGES`` (a key absent from an older checkpoint counts as its default)."""
    a, b = _flat(saved), _flat(current)
    return [k for k in b if k not in RESUMABLE_CHANGES and k in a and a[k] != b[k]]


def check_compatible(ckpt: dict[str, Any], config: dict[str, Any], path: Path) -> None:
    """Refuse a checkpoint from another model or config, naming what differs."""
    diffs = identity_mismatch(ckpt.get("config", {}), config)
    if diffs:
        shown = ", ".join(f"{k}: {_get(ckpt['config'], k)!r} != {_get(config, k)!r}" for k in diffs[:4])
        more = f" and {len(diffs) - 4} more" if len(diffs) > 4 else ""
        raise CheckpointError(
            f"checkpoint {path} belongs to another run: it was trained with other settings ({shown}{more}); resume "
            f"with the same settings (only {', '.join(RESUMABLE_CHANGES)} may change) or use another train.out_dir"
        )


def check_same_classes(ckpt: dict[str, Any], classes: list[Any], path: Path) -> None:
    """Refuse to resume on data whose classes (identities) are not the run's: another folder behind the same
    ``data.root`` (or a new one) would continue training on other labels without a word."""
    saved = ckpt.get("classes")
    if saved is None or list(saved) == list(classes):
        return
    first = next((i for i, (a, b) in enumerate(zip(saved, classes)) if a != b), min(len(saved), len(classes)))
    raise CheckpointError(
        f"checkpoint {path} was trained on {len(saved)} classes, the data now has {len(classes)}"
        + (
            f" (the first difference at #{first}: {saved[first]!r} != {classes[first]!r})"
            if first < min(len(saved), len(classes))
            else ""
        )
        + ": resume on the run's own data, or use another train.out_dir"
    )


def pack_numpy_rng(state: tuple) -> dict[str, Any]:
    """NumPy's RNG state in types ``weights_only`` loading accepts."""
    name, keys, pos, has_gauss, gauss = state
    return {
        "name": name,
        "keys": torch.from_numpy(np.asarray(keys).astype(np.int64)),
        "pos": int(pos),
        "has_gauss": int(has_gauss),
        "gauss": float(gauss),
    }


def unpack_numpy_rng(state: dict[str, Any]) -> tuple:
    return state["name"], state["keys"].numpy().astype(np.uint32), state["pos"], state["has_gauss"], state["gauss"]
