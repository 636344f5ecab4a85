"""The files dhm writes and reads back: their format tags, atomic writes (a crash leaves the old file or the new
one, never a torn one) and ``weights_only`` loading with one-line errors. Training checkpoints
(``dhm-checkpoint-1``) and deploy files (``dhm-deploy-1``) are dicts tagged with their format."""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch

from .errors import READABLE, CheckpointError, DHMError, first_line, load_error

FORMAT = "dhm-checkpoint-1"
DEPLOY_FORMAT = "dhm-deploy-1"
REQUIRED = {FORMAT: ("model", "model_spec", "config"), DEPLOY_FORMAT: ("model", "state_dict")}


def refuse_input_as_output(output: str | Path, inputs: Any, what: str) -> None:
    """A DHMError when ``output`` is one of the ``inputs`` (paths) a command reads: writing it would destroy them."""
    out = Path(output).expanduser().resolve()
    for item in inputs:
        if Path(item).expanduser().resolve() == out:
            raise DHMError(f"{what}: the output {output} is an input of this command; give another output path")


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
    except RuntimeError as exc:  # torch's zip writer reports a full disk or a failed write as a RuntimeError
        raise CheckpointError(f"cannot write {path}: {write_failure(exc)}") from None
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


def write_failure(exc: BaseException) -> str:
    """Why a library's writer (torch's zip writer, safetensors, TorchScript) failed, in a few words."""
    text = str(exc).lower()
    if "no space" in text or "file write failed" in text or "failed writing" in text:
        return "the write failed (is the disk full?)"
    if "permission denied" in text or "cannot be opened" in text:
        return "permission denied or the folder does not exist"
    return first_line(exc, 160)


def write_via_temp(path: Path, write: Any) -> None:
    """``write(tmp_path)`` into a temporary file beside ``path``, then rename it over ``path``: an export that fails
    half-way (a full disk, an unwritable folder) leaves no partial file and a one-line CheckpointError. ``write``
    is a library's file writer (safetensors, TorchScript, ONNX), whose write errors arrive as OSError,
    RuntimeError or the library's own error type."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
    except OSError as exc:
        raise CheckpointError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        raise CheckpointError(f"cannot write {path}: {exc.strerror or exc}") from None
    except Exception as exc:
        if not _is_write_error(exc):
            raise
        raise CheckpointError(f"cannot write {path}: {write_failure(exc)}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _is_write_error(exc: BaseException) -> bool:
    """A library's report of a failed write: safetensors' error, torch's writer RuntimeError, an I/O message."""
    name = type(exc).__name__
    text = str(exc).lower()
    return name == "SafetensorError" or (
        isinstance(exc, RuntimeError) and any(w in text for w in ("write", "writ", "open", "space", "ioerror"))
    )


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
    if path.suffix.lower() == ".onnx":
        raise CheckpointError(
            f"{path} is an ONNX export, a deployment-only format (run it with onnxruntime); {READABLE}"
        )
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
    if fmt == FORMAT and not isinstance(obj["config"], dict):
        raise CheckpointError(f"{path}: config must be a mapping; the file was edited or is damaged")
    return obj


def load_state(module: torch.nn.Module, state: dict[str, Any], what: str) -> None:
    """``load_state_dict(strict=True)`` with a one-line error naming the first missing or unexpected keys."""
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()
        raise CheckpointError(f"{what} does not fit this model: {' '.join(first[1:3])[:300]}") from None
