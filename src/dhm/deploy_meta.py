"""The schema of what a deployed file says besides its weights (the model spec, class names, normalisation, input
size, config), checked whenever such a file is read: a file edited by hand or crafted is refused with one line
naming the field, never used to allocate, normalise with a zero or divide by nothing.

The model itself is first built on the ``meta`` device, so a spec whose sizes do not match the file's tensors is
refused before any memory is allocated for it.
"""

from __future__ import annotations

import inspect
import json
import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from .branches.deploy import DEPLOYS, deployable
from .errors import CheckpointError, first_line
from .files import load_state
from .models import MODELS, create_model
from .models.hubs import split_name

MAX_SIDE = 16384  # the largest image side a deployed model may declare
MAX_CHANNELS = 64
SPEC_KEYS = ("name", "num_classes", "in_channels", "kwargs")


def _fail(where: str, field: str, why: str) -> CheckpointError:
    return CheckpointError(f"{where}: {field} {why}; the file was edited or is damaged")


def _int(value: Any, where: str, field: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _fail(where, field, f"must be an integer in [{low}, {high}], got {_short(value)}")
    return value


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def parse_json(text: Any, where: str, field: str) -> dict[str, Any]:
    """A JSON object from a metadata string (safetensors, ONNX)."""
    try:
        value = json.loads(text) if isinstance(text, str) else None
    except (ValueError, RecursionError):
        value = None
    if not isinstance(value, dict):
        raise _fail(where, field, "is not a JSON object")
    return value


def check_spec(spec: Any, where: str) -> dict[str, Any]:
    """The model spec (``name``, ``num_classes``, ``in_channels``, ``kwargs``), checked."""
    if not isinstance(spec, Mapping):
        raise _fail(where, "the model spec", f"must be a mapping, got {type(spec).__name__}")
    missing = [k for k in SPEC_KEYS if k not in spec]
    if missing:
        raise _fail(where, "the model spec", f"lacks {', '.join(missing)}")
    if not isinstance(spec["name"], str) or not spec["name"]:
        raise _fail(where, "model name", f"must be a model name, got {_short(spec['name'])}")
    _int(spec["num_classes"], where, "num_classes", 1, 10**7)
    _int(spec["in_channels"], where, "in_channels", 1, MAX_CHANNELS)
    kwargs = spec["kwargs"]
    if not isinstance(kwargs, Mapping) or not all(isinstance(k, str) for k in kwargs):
        raise _fail(where, "model kwargs", "must be a mapping of option names")
    head = spec.get("head", "main")
    if not isinstance(head, str) or head not in DEPLOYS:
        raise _fail(where, "deployed head", f"must be one of {', '.join(DEPLOYS)}, got {_short(head)}")
    if head != "main" and not isinstance(spec.get("branches"), str):
        raise _fail(where, "branches", f"must name the branch layout of the deployed {head}")
    hub = split_name(spec["name"])
    if hub is None and spec["name"] in MODELS:
        params = inspect.signature(MODELS.get(spec["name"])).parameters
        if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            unknown = sorted(set(kwargs) - set(params))
            if unknown:
                raise _fail(where, "model kwargs", f"name options model {spec['name']} does not have: {unknown[:3]}")
    return dict(spec)


def _floats(value: Any, where: str, field: str, channels: int) -> list[float]:
    ok = isinstance(value, (list, tuple)) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in value
    )
    if not ok or len(value) != channels or not all(math.isfinite(v) for v in value):
        raise _fail(where, field, f"must be {channels} finite number(s), one per input channel, got {_short(value)}")
    return [float(v) for v in value]


def check_info(info: Mapping[str, Any], spec: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Class names, mean, std, input size and config of a deployed file, checked against its model spec. Missing
    (None) entries stay None; what they are needed for says so."""
    out: dict[str, Any] = {}
    channels = spec["in_channels"]
    classes = info.get("classes") or []
    if not isinstance(classes, (list, tuple)) or not all(isinstance(c, str) for c in classes):
        raise _fail(where, "classes", "must be a list of class names")
    if classes and len(classes) != spec["num_classes"]:
        raise _fail(where, "classes", f"has {len(classes)} names for {spec['num_classes']} outputs")
    out["classes"] = list(classes)
    for key in ("mean", "std"):
        value = info.get(key)
        out[key] = None if value is None else _floats(value, where, key, channels)
    if out["std"] is not None and min(out["std"]) <= 0:
        raise _fail(where, "std", f"must be positive, got {out['std']}")
    size = info.get("input_size")
    if size is not None:
        if not isinstance(size, (list, tuple)) or len(size) != 3:
            raise _fail(where, "input_size", f"must be [channels, height, width], got {_short(size)}")
        _int(size[0], where, "input_size channels", channels, channels)
        size = [size[0], *(_int(s, where, "input_size side", 1, MAX_SIDE) for s in size[1:])]
    out["input_size"] = size
    config = info.get("config")
    if config is not None and not isinstance(config, Mapping):
        raise _fail(where, "config", f"must be a mapping, got {type(config).__name__}")
    out["config"] = dict(config or {})
    return out


def check_state(state: Any, where: str) -> dict[str, torch.Tensor]:
    """A state dict: tensor values under string keys."""
    if not isinstance(state, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise _fail(where, "the weights", "must map parameter names to tensors")
    return dict(state)


def _fits(shell: nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    """CheckpointError unless ``state`` has exactly ``shell``'s entries with their shapes."""
    wanted = {k: tuple(v.shape) for k, v in shell.state_dict().items()}
    missing, unexpected = sorted(set(wanted) - set(state)), sorted(set(state) - set(wanted))
    wrong = [k for k in wanted if k in state and tuple(state[k].shape) != wanted[k]]
    if wrong:
        k = wrong[0]
        why = f"{k} has shape {tuple(state[k].shape)}, the model's is {wanted[k]}"
    elif missing or unexpected:
        why = f"missing {missing[:3]}, unexpected {unexpected[:3]}"
    else:
        return
    raise CheckpointError(f"{what} does not fit this model: {why}")


def rebuild(spec: Mapping[str, Any], state: dict[str, torch.Tensor], what: str) -> nn.Module:
    """The plain model of a checked ``spec`` with the weights ``state`` (strictly), in eval mode. The model is
    built on the meta device first: a spec that does not fit the file's tensors is refused before allocating."""
    spec = check_spec(spec, what)
    state = check_state(state, what)

    head = spec.get("head", "main")

    def build() -> nn.Module:
        kwargs = dict(spec["kwargs"])
        branches = spec["branches"] if head != "main" else "none"
        model = create_model(
            spec["name"], num_classes=spec["num_classes"], branches=branches, in_channels=spec["in_channels"], **kwargs
        )
        return deployable(model, head)

    try:
        with torch.device("meta"):
            shell = build()
    except (TypeError, ValueError) as exc:  # options of the wrong type or value in the file's spec
        raise _fail(what, "model kwargs", f"do not build model {spec['name']} ({first_line(exc, 120)})") from None
    _fits(shell, state, what)  # names and shapes checked on the empty shell
    model = build()
    load_state(model, state, what)
    return model.eval()
