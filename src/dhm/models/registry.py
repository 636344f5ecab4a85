"""The model registry: ``create_model`` / ``list_models`` over family entry points with their paper layouts."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

from ..branches import LAYOUTS, BranchSpec, add_neck, attach_branches, layout_specs, stage_plan
from ..branches.layouts import layout_extras
from ..registry import Registry
from .hubs import HUBS, default_branches, split_name

ModelFn = Callable[..., nn.Module]
MODELS: Registry[ModelFn] = Registry("model")
NECKS = ("none", "bnneck")


def register_model(paper_branches: Sequence[BranchSpec]) -> Callable[[ModelFn], ModelFn]:
    """Register a backbone entry point together with the branch layout ``branches="paper"`` gives."""

    def deco(fn: ModelFn) -> ModelFn:
        return MODELS.register(fn.__name__, paper_branches=tuple(paper_branches))(fn)

    return deco


def paper_branches(name: str) -> tuple[BranchSpec, ...]:
    """The released branch layout of model ``name`` (docs/method.md section 2)."""
    return MODELS.meta(name)["paper_branches"]


def create_model(
    name: str,
    num_classes: int | None = None,
    branches: str | Sequence[BranchSpec | dict] = "paper",
    dynamic_fork: bool = False,
    features: bool = False,
    neck: str = "none",
    **kwargs: Any,
) -> nn.Module:
    """Build a registered model.

    Args:
        name: a registry name, see :func:`list_models`, or ``torchvision:<name>`` / ``timm:<name>`` (those
            libraries' models, randomly initialised; ``branches="paper"`` then means the paper's fork points,
            see ``dhm.models.hubs``).
        num_classes: classes of every head; default: the family's (100 for CIFAR models, 1000 for ImageNet).
        branches: ``"paper"`` (released layout), ``"none"`` (the plain backbone), a named layout of the sibling
            methods (``"light-every-stage"``, ``"peers:K"``, ``"one:m"``, ``"okddip:m"``;
            :mod:`dhm.branches.layouts`) or a list
            of branch specs.
        dynamic_fork: stochastic fork point in train mode (docs/method.md 4.2); static by default, as released.
        features: the train-mode output also carries every head's pooled feature (``dhm.HeadOutputs``); with
            ``branches="none"`` the backbone is then wrapped as a one-head branched model.
        neck: ``"none"`` or ``"bnneck"`` (re-ID: the classifier becomes BatchNorm1d + a bias-free classifier on
            every head, and the eval-mode output is the post-BN embedding; :mod:`dhm.branches.neck`).
        **kwargs: family options, e.g. ``dropout=0.3`` for WRNs. ``None`` values are dropped.

    Example:
        >>> model = dhm.create_model("cifar_resnet32", num_classes=100)              # DHM, paper layout
        >>> plain = dhm.create_model("cifar_resnet32", num_classes=100, branches="none")
    """
    hub = split_name(name)
    fn = MODELS.get(name) if hub is None else functools.partial(HUBS.get(hub[0]), hub[1])
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    if neck not in NECKS:
        raise ValueError(f"neck must be one of {', '.join(NECKS)}, got {neck!r}")
    backbone = fn(**kwargs)
    if neck == "bnneck":
        add_neck(backbone)
    named = isinstance(branches, str) and branches.partition(":")[0] in LAYOUTS
    if isinstance(branches, str) and branches not in ("paper", "none") and not named:
        raise ValueError(
            f"branches must be 'paper', 'none', a layout ({', '.join(LAYOUTS.list())}) or a list of branch specs, "
            f"got {branches!r}"
        )
    if branches == "none" and not features:
        return backbone
    plan = stage_plan(backbone)
    extras = layout_extras(str(branches)) if named else ()
    if branches == "paper":
        branches = paper_branches(name) if hub is None else default_branches(plan)
    elif named:
        branches = layout_specs(str(branches), plan)
    specs = [] if branches == "none" else branches
    return attach_branches(backbone, specs, dynamic_fork=dynamic_fork, plan=plan, features=features, extras=extras)


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching the fnmatch ``pattern``.

    Example:
        >>> dhm.list_models("cifar_resnet*")
        ['cifar_resnet110', 'cifar_resnet1202', 'cifar_resnet20', 'cifar_resnet32', 'cifar_resnet56']
    """
    return MODELS.list(pattern)
