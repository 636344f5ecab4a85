"""Weights from a local file (``model.pretrained=PATH``): a torchvision or timm ``state_dict`` (or a checkpoint
holding one under ``state_dict`` / ``model``) loaded into the plain backbone by name and shape. dhm never downloads
weights; what did not match (a classifier of another size, a BNNeck in place of ``fc``) is reported, not hidden."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import CheckpointError, load_error
from ..files import torch_load


@dataclass(frozen=True)
class PretrainedReport:
    """What :func:`load_pretrained` took: the loaded keys, the file's keys it left (absent from the model or of
    another shape) and the model's keys it did not find."""

    loaded: tuple[str, ...]
    unused: tuple[str, ...]
    missing: tuple[str, ...]

    def line(self, path: str | Path) -> str:
        """``model.pretrained: 318 of 320 tensors from PATH; not used: fc.weight, fc.bias; not in the file: ...``"""
        parts = [f"model.pretrained: {len(self.loaded)} tensors loaded from {path}"]
        for label, keys in (("not used", self.unused), ("left as initialised", self.missing)):
            if keys:
                more = f" (+{len(keys) - 6} more)" if len(keys) > 6 else ""
                parts.append(f"{label}: {', '.join(keys[:6])}{more}")
        return "; ".join(parts)


def _state_dict(obj: object, path: Path) -> dict[str, torch.Tensor]:
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not obj or not all(isinstance(k, str) for k in obj):
        raise CheckpointError(f"model.pretrained: {path} is not a state_dict (a mapping of names to tensors)")
    state = {k.removeprefix("module."): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not state:
        raise CheckpointError(f"model.pretrained: {path} holds no tensors")
    return state


def v_dtype(tensor: torch.Tensor) -> str:
    """``int64``, ``float32``, ...: a tensor's dtype as a user reads it."""
    return str(tensor.dtype).removeprefix("torch.")


def load_pretrained(model: nn.Module, path: str | Path) -> PretrainedReport:
    """Copy the tensors of the state_dict at ``path`` whose names and shapes match ``model``'s (in place).

    Example:
        >>> report = load_pretrained(dhm.create_model("resnet50", branches="none"), "resnet50-0676ba61.pth")
        >>> print(report.line("resnet50-0676ba61.pth"))
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"model.pretrained: {path} does not exist (dhm never downloads weights)")
    try:
        obj = torch_load(path)
    except Exception as exc:  # noqa: BLE001 - torch.load raises many types on corrupt or foreign files
        raise CheckpointError(f"model.pretrained: cannot load {path}: {load_error(exc)}") from None
    state = _state_dict(obj, path)
    own = model.state_dict()
    quantized = [k for k, v in state.items() if v.is_quantized]
    if quantized:
        raise CheckpointError(
            f"model.pretrained: {path} holds quantized tensors ({', '.join(quantized[:3])}): give float weights"
        )
    take = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape and not own[k].dtype.is_complex}
    mixed = [k for k, v in take.items() if v.is_floating_point() != own[k].is_floating_point()]
    if mixed:
        k = mixed[0]
        raise CheckpointError(
            f"model.pretrained: {path} holds {k} as {v_dtype(take[k])} where the model's is {v_dtype(own[k])} "
            f"({len(mixed)} such tensors): not weights of this model"
        )
    bad = [k for k, v in take.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise CheckpointError(f"model.pretrained: {path} holds non-finite values in {', '.join(bad[:3])}")
    if not any(v.is_floating_point() for v in take.values()):
        raise CheckpointError(
            f"model.pretrained: no tensor of {path} matches this model by name and shape "
            f"(its first keys: {', '.join(list(state)[:3])}; the model's: {', '.join(list(own)[:3])})"
        )
    with torch.no_grad():
        for key, value in take.items():
            own[key].copy_(value)
    return PretrainedReport(
        tuple(take), tuple(k for k in state if k not in take), tuple(k for k in own if k not in take)
    )
