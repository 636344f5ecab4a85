"""The authors' checkpoints (d-li14/DHM): read the file their training scripts write and load it into dhm's model.

Their ``cifar.py`` / ``imagenet.py`` save ``{"epoch", "arch", "state_dict", "best_prec1", "optimizer"}`` with
``torch.save``, the model wrapped in (Distributed)DataParallel, so every key starts with ``module.``. Their
branches are modules named ``<stage>_head<k>`` (the copied stages), ``bn_head<k>`` and ``fc_head<k>`` (the head);
everything else is the backbone. dhm's released layouts (docs/method.md section 2) build the same modules in the
same order, so each group maps onto dhm's ``backbone.*`` / ``branches.head<k>.*`` entries one to one, checked by
shape. The file is read with ``torch.load(weights_only=True)``: it can never run code.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .branches import DHMModel
from .deploy_meta import check_info
from .engine.checkpoint import torch_load
from .errors import CheckpointError, first_line, load_error
from .models import create_model

BRANCH_KEY = re.compile(r"^[A-Za-z]+\d*_head(\d+)\.")


def read_official(path: str | Path) -> dict[str, Any]:
    """The authors' checkpoint dict, loaded without unpickling code; its ``state_dict`` without ``module.``."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        obj = torch_load(path)
    except Exception as exc:  # corrupt, foreign, or holding objects other than tensors and plain values
        raise CheckpointError(f"cannot read {path}: {load_error(exc)}") from None
    state = obj.get("state_dict") if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not state or not all(isinstance(v, Tensor) for v in state.values()):
        raise CheckpointError(f"{path} has no 'state_dict' of tensors: not a checkpoint of the authors' scripts")
    if not all(isinstance(k, str) for k in state):
        raise CheckpointError(f"{path}: the state_dict's keys must be parameter names (strings)")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    bad = next((k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()), None)
    if bad is not None:
        raise CheckpointError(f"{path}: {bad} holds NaN or infinite values (a diverged or damaged checkpoint)")
    return {**obj, "state_dict": state}


def _groups(keys: list[str], ours: bool) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for key in keys:
        if ours:
            parts = key.split(".")
            group = "main" if parts[0] == "backbone" else parts[1]
        else:
            match = BRANCH_KEY.match(key)
            group = f"head{match.group(1)}" if match else "main"
        groups.setdefault(group, []).append(key)
    return groups


def convert_state(state: dict[str, Tensor], model: DHMModel) -> dict[str, Tensor]:
    """The authors' state_dict (no ``module.`` prefix) renamed to ``model``'s keys, group by group, in order."""
    target = model.state_dict()
    theirs, ours = _groups(list(state), ours=False), _groups(list(target), ours=True)
    if sorted(theirs) != sorted(ours):
        raise CheckpointError(f"the checkpoint has parts {sorted(theirs)}, the model {sorted(ours)}")
    out = {}
    for group, keys in ours.items():
        source = theirs[group]
        if len(source) != len(keys):
            part = "backbone" if group == "main" else f"branch {group}"
            raise CheckpointError(
                f"the checkpoint's {part} has {len(source)} entries, the model's {len(keys)}: another architecture"
            )
        for mine, their in zip(keys, source):
            if tuple(state[their].shape) != tuple(target[mine].shape):
                raise CheckpointError(
                    f"{their} {tuple(state[their].shape)} does not fit {mine} {tuple(target[mine].shape)}: "
                    "another architecture or width"
                )
            if state[their].is_floating_point() != target[mine].is_floating_point():
                raise CheckpointError(f"{their} has dtype {state[their].dtype}, {mine} needs {target[mine].dtype}")
            out[mine] = state[their]
    return out


def load_official(path: str | Path, model_name: str, num_classes: int | None = None) -> DHMModel:
    """dhm's branched ``model_name`` (paper layout) holding the weights of the authors' checkpoint at ``path``.

    Args:
        num_classes: default: read from the checkpoint's ``fc.weight``.

    Example:
        >>> model = dhm.load_official("resnet50_dhm.pth.tar", "resnet50")
        >>> torchvision.models.resnet50().load_state_dict(dhm.strip(model).state_dict())
    """
    obj = read_official(path)
    state = obj["state_dict"]
    if num_classes is None:
        fc = state.get("fc.weight")
        if fc is None or fc.dim() != 2:
            raise CheckpointError(f"{path} has no fc.weight matrix; pass num_classes (--classes)")
        num_classes = fc.shape[0]
    conv = next((v for k, v in state.items() if not BRANCH_KEY.match(k) and v.dim() == 4), None)
    in_channels = conv.shape[1] if conv is not None else 3
    try:
        with torch.device("meta"):
            model = create_model(model_name, num_classes=num_classes, in_channels=in_channels)
    except (TypeError, ValueError) as exc:  # e.g. torchvision:... where torchvision cannot be imported
        raise CheckpointError(f"cannot build {model_name}: {first_line(exc)}") from None
    model.load_state_dict(convert_state(state, model), strict=True, assign=True)
    return model.eval()


#: The normalisation of the authors' scripts: CIFAR's statistics for 32-pixel inputs, ImageNet's otherwise.
CIFAR_NORM = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
IMAGENET_NORM = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def import_official(
    path: str | Path,
    model_name: str,
    output: str | Path,
    num_classes: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> Path:
    """Write the authors' checkpoint as a dhm checkpoint of the branched model (``dhm export`` strips it), with
    the normalisation ``dhm predict`` and ``dhm export`` need: ``mean`` / ``std``, default the authors' (CIFAR's
    statistics for CIFAR models, ImageNet's otherwise)."""
    from .branches.plan import example_input
    from .engine.checkpoint import FORMAT, save_atomic
    from .version import __version__

    model = load_official(path, model_name, num_classes)
    obj = read_official(path)
    example = example_input(model.backbone)
    channels = example.shape[1]
    spec = {"name": model_name, "num_classes": model.plan.num_classes, "in_channels": channels, "kwargs": {}}
    default = CIFAR_NORM if example.shape[-1] <= 64 else IMAGENET_NORM
    mean, std = list(mean or default[0]), list(std or default[1])
    if channels != 3 and (len(mean), len(std)) == (3, 3):
        mean, std = mean[:1] * channels, std[:1] * channels
    info = check_info({"mean": mean, "std": std}, spec, "--mean/--std")
    out = Path(output)
    save_atomic(
        {
            "format": FORMAT,
            "model": {k: v.contiguous() for k, v in model.state_dict().items()},
            "model_spec": spec,
            "classes": [],
            "input_size": list(example.shape[1:]),
            "mean": info["mean"],
            "std": info["std"],
            "config": {},
            "imported_from": {
                "path": str(Path(path).resolve()),
                **{k: obj.get(k) for k in ("arch", "epoch", "best_prec1") if isinstance(obj.get(k), (str, int, float))},
            },
            "dhm_version": __version__,
        },
        out,
    )
    return out
