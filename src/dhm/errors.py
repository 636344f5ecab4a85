"""The errors dhm reports to users as one line and exit code 2 (bad input, never a bug)."""

from __future__ import annotations


class DHMError(Exception):
    """Base class: a problem with the user's input (config, data, checkpoint), reported in one line."""


class ConfigError(DHMError, ValueError):
    """An unknown key, a wrong value type or an invalid value in a recipe or an override."""


class DataError(DHMError):
    """Missing, corrupt or inconsistent data."""


class CheckpointError(DHMError):
    """A checkpoint that cannot be used here (another model or config, corrupt, wrong format)."""


class Terminated(Exception):
    """SIGTERM, raised where the program is, so that the same clean-up as for Ctrl-C runs (``dhm`` exits 143)."""


class DivergedError(DHMError):
    """Training produced a non-finite loss; the run stops keeping its last good checkpoint. Exit code 3."""

    exit_code = 3


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first non-empty line of an exception's message (its type name when the message is empty)."""
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return lines[0][:limit] if lines else type(exc).__name__


#: What dhm reads, for the messages about files that are for deployment only (TorchScript, ONNX).
READABLE = "dhm eval, predict and export read best.pt, last.pt, deploy.pt and pt or safetensors exports"


def load_error(exc: BaseException) -> str:
    """Why ``torch.load(weights_only=True)`` refused a file, in words (never PyTorch's hint to load it unsafely)."""
    text = str(exc)
    if "TorchScript archives" in text:
        return f"it is a TorchScript export, a deployment-only format (load it with torch.jit.load); {READABLE}"
    if "Unsupported global" in text:
        return "it holds objects other than tensors and plain values; loading those could run code, so dhm refuses"
    if isinstance(exc, EOFError) or "Ran out of input" in text or not text.strip():
        return "the file is empty or truncated"
    if "Weights only load failed" in text or "invalid load key" in text or "zip archive" in text:
        return "not a PyTorch checkpoint"
    return first_line(exc)
