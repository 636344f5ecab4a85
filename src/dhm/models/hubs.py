"""Backbones from other libraries by prefix: ``torchvision:<name>`` and ``timm:<name>`` (optional dependencies).

Their branches come from the stage plan dhm finds (docs/method.md section 2 describes the paper's own layouts);
``branches="paper"`` on such a model means the paper's fork points, counted from the last stage: one branch
after the second-to-last stage and one after the stage before it, each a width-1 copy of the stages that follow.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..branches import BranchSpec, StagePlan
from ..errors import first_line
from ..registry import Registry

HubFn = Callable[..., nn.Module]
HUBS: Registry[HubFn] = Registry("model library")


def _require(module: str) -> Any:
    """The library ``module``, or a ValueError that says what is wrong: not installed, installed but missing a
    library it needs, or installed but unable to load (the module and its error)."""
    import importlib.util

    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        missing = (exc.name or "").split(".")[0]
        if missing and missing != module:  # the library is there; something it imports is not
            raise ValueError(
                f"{module} models need {module}, which is installed but needs {missing}, which is not "
                f"(pip install {missing})"
            ) from None
        raise ValueError(f"{module} models need {module}, which is not installed (pip install {module})") from None
    except Exception as exc:  # noqa: BLE001 - present but unable to load (e.g. a CUDA build beside a CPU torch)
        spec = importlib.util.find_spec(module) if module not in sys.modules else None
        where = f" at {Path(spec.origin).parent}" if spec is not None and spec.origin else ""
        culprit = _failing_package(exc) or module
        via = " but" if culprit == module else f", but {culprit}, which it loads,"
        raise ValueError(
            f"{module} models need {module}, which is installed{where}{via} cannot be loaded beside torch "
            f"{torch.__version__} ({type(exc).__name__}: {first_line(exc, 160)}); install the {culprit} build "
            "made for this torch"
        ) from None


def _failing_package(exc: BaseException) -> str | None:
    """The installed package whose code raised ``exc``: the deepest traceback frame under site-packages outside
    torch (torch raises on behalf of the library that called it)."""
    found = None
    tb = exc.__traceback__
    while tb is not None:
        match = re.search(r"[/\\](?:site|dist)-packages[/\\]([A-Za-z0-9_]+)", tb.tb_frame.f_code.co_filename)
        if match and match.group(1) != "torch":
            found = match.group(1)
        tb = tb.tb_next
    return found


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
