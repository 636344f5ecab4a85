"""The deployed formats, in one place: what a deploy file holds, rebuilding the plain model from its spec, and
loading every kind of file a run or an export writes (training checkpoints ``best.pt`` / ``last.pt``,
``deploy.pt`` and ``pt`` exports, ``safetensors`` exports) as one :class:`Deployed` object.

Every such file carries what inference needs besides the weights: the model spec (``name``, ``num_classes``,
``in_channels``, ``kwargs`` of :func:`dhm.create_model`), the class names, the normalisation (mean and std) and the
input size; training checkpoints and deploy dicts hold them as entries, safetensors exports as JSON metadata.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from .branches.deploy import deployed_weights
from .deploy_meta import check_info, check_spec, parse_json, rebuild
from .errors import CheckpointError, DHMError, first_line
from .files import DEPLOY_FORMAT, FORMAT, load_file
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
    what = f"{'deploy file' if deploy else 'checkpoint'} {path}"
    spec = check_spec(spec, what)
    info = check_info({k: obj.get(k) for k in INFO_KEYS}, spec, what)
    if deploy:
        model = rebuild(spec, obj["state_dict"], what)
    else:
        weights = obj["model"] if isinstance(obj["model"], dict) else {}
        model = rebuild(spec, deployed_weights(weights, spec.get("head", "main")), what)
    return model, deploy_payload(model, spec, info)


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
    what = f"export {path}"
    spec = check_spec(parse_json(meta[SAFETENSORS_MODEL], what, f"metadata {SAFETENSORS_MODEL!r}"), what)
    info = check_info(parse_json(meta.get(SAFETENSORS_META, "{}"), what, f"metadata {SAFETENSORS_META!r}"), spec, what)
    model = rebuild(spec, state, what)
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
            f"{path} does not carry {', '.join(missing)} (written by an older dhm, or imported without "
            "normalisation); use the run's deploy.pt, or import again with --mean and --std"
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
