"""Checkpoints: one dict, written atomically, loaded with ``weights_only=True``, refused when it does not belong
to the run; and the branch-free deploy export."""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import CheckpointError, load_error
from ..version import __version__

FORMAT = "dhm-checkpoint-1"
DEPLOY_FORMAT = "dhm-deploy-1"
REQUIRED = {FORMAT: ("model", "model_spec", "config"), DEPLOY_FORMAT: ("model", "state_dict")}
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


def save_atomic(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file in the same folder, flush + fsync, then rename over ``path``: a crash at
    any moment leaves either the old file or the new one, never a torn one."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CheckpointError(f"cannot write {path}: {exc.strerror or exc}") from None
    tmp = ""
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:  # unwritable folder, disk full: the old file (if any) stays as it was
        raise CheckpointError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        if tmp and os.path.exists(tmp):
            os.unlink(tmp)
    try:  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass


def torch_load(path: str | Path) -> Any:
    """``torch.load(weights_only=True)`` on the CPU, without PyTorch's warnings about foreign pickles (the caller
    turns a refusal into one line)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.load(path, map_location="cpu", weights_only=True)


def load_file(path: str | Path, expected_format: str | None = None, need: tuple[str, ...] = ()) -> dict[str, Any]:
    """A dhm checkpoint or deploy file, loaded with ``weights_only=True``, with the entries its format has (and
    ``need``); CheckpointError if unusable."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        obj = torch_load(path)
    except Exception as exc:  # torch.load raises many types on corrupt or foreign files
        raise CheckpointError(f"cannot load checkpoint {path}: {load_error(exc)}") from None
    fmt = obj.get("format") if isinstance(obj, dict) else None
    if fmt not in (FORMAT, DEPLOY_FORMAT) or (expected_format and fmt != expected_format):
        raise CheckpointError(f"{path} is not a dhm {expected_format or 'checkpoint'} (format {fmt!r})")
    missing = [k for k in (*REQUIRED[fmt], *need) if k not in obj]
    if missing:
        raise CheckpointError(f"{path} lacks {', '.join(missing)}: an incomplete or edited dhm checkpoint")
    return obj


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
            "with the same settings "
            "(only train.epochs, paths, progress, workers, device and speed options may change) or use another "
            "train.out_dir"
        )


def load_state(module: torch.nn.Module, state: dict[str, Any], what: str) -> None:
    """``load_state_dict(strict=True)`` with a one-line error naming the first missing or unexpected keys."""
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()
        raise CheckpointError(f"{what} does not fit this model: {' '.join(first[1:3])[:300]}") from None


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


def deploy_payload(backbone: torch.nn.Module, model_spec: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    """The branch-free export: the plain backbone's state_dict plus what rebuilds it (``model_spec``)."""
    state = {k: v.detach().cpu().contiguous() for k, v in backbone.state_dict().items()}
    return {"format": DEPLOY_FORMAT, "model": model_spec, "state_dict": state, "dhm_version": __version__, **meta}
