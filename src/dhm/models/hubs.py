"""Backbones from other libraries by prefix: ``torchvision:<name>`` and ``timm:<name>`` (optional dependencies).

Their branches come from the stage plan dhm finds (docs/method.md section 2 describes the paper's own layouts);
``branches="paper"`` on such a model means the paper's fork points, counted from the last stage: one branch
after the second-to-last stage and one after the stage before it, each a width-1 copy of the stages that follow.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from torch import nn

from ..branches import BranchSpec, StagePlan
from ..registry import Registry

HubFn = Callable[..., nn.Module]
HUBS: Registry[HubFn] = Registry("model library")


def _require(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except Exception as exc:  # absent, or present but unable to load (e.g. a CUDA build beside a CPU torch)
        reason = "not installed" if isinstance(exc, ModuleNotFoundError) else f"{type(exc).__name__}: {exc}"
        raise ValueError(f"{module} models need {module} (pip install {module}); it cannot be imported: {reason}")


@HUBS.register("torchvision")
def torchvision_model(name: str, num_classes: int | None = None, in_channels: int = 3, **kwargs: Any) -> nn.Module:
    """``torchvision.models.get_model(name)``, randomly initialised, with ``num_classes`` outputs."""
    _offline("torchvision", kwargs)
    tv = _require("torchvision")
    if in_channels != 3:
        raise ValueError(f"torchvision models take 3-channel images, this data has {in_channels} channel(s)")
    if name not in tv.models.list_models():
        raise ValueError(f"torchvision has no model {name!r} (torchvision.models.list_models() lists them)")
    kwargs.pop("weights", None)
    return tv.models.get_model(name, weights=None, **({"num_classes": num_classes} if num_classes else {}), **kwargs)


@HUBS.register("timm")
def timm_model(name: str, num_classes: int | None = None, in_channels: int = 3, **kwargs: Any) -> nn.Module:
    """``timm.create_model(name)``, randomly initialised, with ``num_classes`` outputs and ``in_channels``."""
    _offline("timm", kwargs)
    timm = _require("timm")
    if not timm.list_models(name):
        raise ValueError(f"timm has no model {name!r} (timm.list_models() lists them)")
    extra = {"num_classes": num_classes} if num_classes else {}
    kwargs.pop("pretrained", None)
    return timm.create_model(name, pretrained=False, in_chans=in_channels, **extra, **kwargs)


def _offline(library: str, kwargs: dict[str, Any]) -> None:
    """Refuse the keywords with which a library would download weights (dhm runs offline)."""
    asked = [k for k in ("pretrained", "weights", "pretrained_cfg_overlay") if kwargs.get(k)]
    if asked:
        raise ValueError(
            f"{library} would download weights ({asked[0]}={kwargs[asked[0]]!r}); dhm never downloads: "
            "give a local state_dict file with model.pretrained=PATH"
        )


def split_name(name: str) -> tuple[str, str] | None:
    """``("timm", "resnet50")`` for ``"timm:resnet50"``; ``None`` for a dhm model name."""
    if ":" not in name:
        return None
    library, _, model = name.partition(":")
    HUBS.get(library)
    return library, model


def default_branches(plan: StagePlan) -> tuple[BranchSpec, ...]:
    """The paper's fork points on any plan: after the second-to-last stage, and after the one before it."""
    n = len(plan.stages)
    return tuple(BranchSpec(fork=f) for f in (n - 2, n - 3) if f >= 0)
