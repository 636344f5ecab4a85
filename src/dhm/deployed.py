"""The deployed formats, in one place: what a deploy file holds, rebuilding the plain model from its spec, and
loading every kind of file a run or an export writes (training checkpoints ``best.pt`` / ``last.pt``,
``deploy.pt`` and ``pt`` exports, ``safetensors`` exports) as one :class:`Deployed` object.

Every such file carries what inference needs besides the weights: the model spec (``name``, ``num_classes``,
``in_channels``, ``kwargs`` of :func:`dhm.create_model`), the class names, the normalisation (mean and std) and the
input size; training checkpoints and deploy dicts hold them as entries, safetensors exports as JSON metadata.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import CheckpointError, DHMError, first_line
from .files import DEPLOY_FORMAT, FORMAT, load_file, load_state
from .models import create_model
from .version import __version__

SAFETENSORS_META = "dhm_meta"  # safetensors metadata key: classes, mean, std, input_size, config (JSON)
SAFETENSORS_MODEL = "dhm_model"  # safetensors metadata key: the model spec (JSON)
INFO_KEYS = ("classes", "mean", "std", "input_size", "config")  # what a deploy file says besides the weights
OWN_MODEL = (
    "{path} holds your own model (trained with dhm.fit), which dhm cannot rebuild: load the weights into it, "
    "net.load_state_dict(torch.load('{path}')['{key}'])"
)


@dataclass
class Deployed:
    """A plain backbone in eval mode, what its inputs and outputs mean, and its deploy dict (``payload``: what a
    ``pt`` export writes)."""

    model: nn.Module
    classes: list[str]
    mean: list[float]
    std: list[float]
    input_size: list[int]  # (C, H, W)
    config: dict[str, Any] = field(default_factory=dict)
    payload: dict[str, Any] = field(default_factory=dict, repr=False)


def rebuild(spec: dict[str, Any], state: dict[str, torch.Tensor], what: str) -> nn.Module:
    """The plain model of ``spec`` with the weights ``state`` (strictly), in eval mode."""
    model = create_model(
        spec["name"],
        num_classes=spec["num_classes"],
        branches="none",
        in_channels=spec["in_channels"],
        **spec["kwargs"],
    )
    load_state(model, state, what)
    return model.eval()


def deploy_payload(backbone: nn.Module, model_spec: dict[str, Any] | None, info: dict[str, Any]) -> dict[str, Any]:
    """The branch-free deploy dict: the plain backbone's state_dict, what rebuilds it (``model_spec``; None for a
    user's own model) and ``info`` (classes, mean, std, input size, config)."""
    state = {k: v.detach().cpu().contiguous() for k, v in backbone.state_dict().items()}
    return {"format": DEPLOY_FORMAT, "model": model_spec, "state_dict": state, "dhm_version": __version__, **info}


def _from_dict(obj: dict[str, Any], path: Path) -> tuple[nn.Module, dict[str, Any]]:
    """The plain model and deploy dict of a loaded training checkpoint or deploy file."""
    deploy = obj["format"] == DEPLOY_FORMAT
    spec = obj["model"] if deploy else obj.get("model_spec")
    if spec is None and (deploy or "model_spec" in obj):  # written by dhm.fit
        raise CheckpointError(OWN_MODEL.format(path=path, key="state_dict" if deploy else "model"))
    if not isinstance(spec, dict):
        raise CheckpointError(f"{path} does not say which model it holds")
    if deploy:
        return rebuild(spec, obj["state_dict"], f"deploy file {path}"), obj
    prefix = "backbone."
    state = {k[len(prefix) :]: v for k, v in obj["model"].items() if k.startswith(prefix)} or obj["model"]
    model = rebuild(spec, state, f"checkpoint {path}")
    info = {k: obj.get(k) for k in ("classes", "input_size", "mean", "std")}
    payload = deploy_payload(model, spec, {**info, "classes": info["classes"] or [], "config": obj.get("config", {})})
    return model, payload


def _from_safetensors(path: Path) -> tuple[nn.Module, dict[str, Any]]:
    try:
        from safetensors import safe_open
        from safetensors.torch import load_file as load_tensors
    except ImportError:
        raise DHMError("reading safetensors files needs the safetensors package: pip install safetensors") from None
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        state = load_tensors(str(path))
    except Exception as exc:  # noqa: BLE001 - safetensors raises several types on foreign or corrupt files
        raise CheckpointError(f"cannot read {path}: {first_line(exc)}") from None
    if SAFETENSORS_MODEL not in meta:
        raise CheckpointError(f"{path} is not a dhm export (no {SAFETENSORS_MODEL!r} metadata)")
    spec, info = json.loads(meta[SAFETENSORS_MODEL]), json.loads(meta.get(SAFETENSORS_META, "{}"))
    model = rebuild(spec, state, f"export {path}")
    return model, deploy_payload(model, spec, info)


def load_plain(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """The plain backbone (eval mode) of any file a run or an export writes, and its deploy dict."""
    path = Path(path).expanduser()
    return _from_safetensors(path) if path.suffix == ".safetensors" else _from_dict(load_file(path), path)


def load_deployed(path: str | Path) -> Deployed:
    """The plain backbone and its metadata from any file a run or an export writes: ``best.pt`` / ``last.pt``,
    ``deploy.pt``, a ``pt`` or a ``safetensors`` export.

    Example:
        >>> deployed = load_deployed("runs/demo/20261126-101500/deploy.pt")
        >>> deployed.model(images).argmax(-1)
    """
    path = Path(path).expanduser()
    model, payload = load_plain(path)
    missing = [k for k in ("mean", "std", "input_size") if not payload.get(k)]
    if missing:
        raise CheckpointError(
            f"{path} does not carry {', '.join(missing)} (written by an older dhm); use the run's deploy.pt"
        )
    return Deployed(
        model,
        list(payload.get("classes") or []),
        list(payload["mean"]),
        list(payload["std"]),
        list(payload["input_size"]),
        payload.get("config") or {},
        payload,
    )


def checkpoint_kind(path: str | Path) -> str:
    """``training`` (best.pt / last.pt), ``deploy`` (deploy.pt, pt exports) or ``safetensors``."""
    path = Path(path).expanduser()
    if path.suffix == ".safetensors":
        return "safetensors"
    return "training" if load_file(path)["format"] == FORMAT else "deploy"
