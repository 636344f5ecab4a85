"""Staged backbones: dhm's own networks, written as stem -> ordered stages -> head plus a stage builder, and the
stage plan they give (``dhm.branches.plan``), which can build branch stages at other widths and depths."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace

import torch
from torch import Tensor, nn

from .plan import PLAN_SOURCES, Stage, StagePlan


class StagedBackbone(nn.Module):
    """Base class of dhm's own backbones: stem -> stages (``stage_names``) -> head, plus a stage builder.

    Subclasses implement ``forward_stem``, ``forward_head``, ``make_stage`` and ``stage_channels``; fresh branch
    stages and heads (``build_stage``, ``build_head``) then come for free, initialised like the backbone.
    ``forward`` is the plain composition, exactly what the branched model runs for its main head, so the deployed
    network and the trained main path are the same computation.
    """

    stage_names: tuple[str, ...] = ()
    default_input_size: int = 32  # the probe input for channels and reductions (CIFAR-sized)
    head_pre_norm: bool = False  # BN-ReLU before pooling in the head (WRN, DenseNet)

    def forward_stem(self, x: Tensor) -> Tensor:
        """Everything before the first stage."""
        raise NotImplementedError

    def forward_head(self, x: Tensor) -> Tensor:
        """Everything after the last stage: (norm-activation,) pooling and the classifier."""
        raise NotImplementedError

    def make_stage(self, index: int, blocks: int, width: float, in_channels: int) -> tuple[nn.Sequential, int]:
        """Stage ``index`` with ``blocks`` blocks at ``width`` times its width, taking ``in_channels``; returns the
        stage and its output channels."""
        raise NotImplementedError

    def stage_channels(self, index: int) -> int:
        """Output channels of stage ``index``."""
        raise NotImplementedError

    def build_stage(self, index: int, blocks: int, width: float, in_channels: int) -> tuple[nn.Sequential, int]:
        """A freshly initialised stage for a branch (see ``make_stage``)."""
        stage, out = self.make_stage(index, blocks, width, in_channels)
        init_conv_bn(stage)
        return stage, out

    def build_head(self, in_channels: int, num_classes: int) -> nn.Module:
        """A freshly initialised head like the main one, for ``in_channels`` features."""
        return pooled_classifier(in_channels, num_classes, pre_norm=self.head_pre_norm)

    def stage_blocks(self, index: int) -> int:
        """Number of repeated blocks in stage ``index`` (a DenseNet stage's closing transition is not one)."""
        return len(getattr(self, self.stage_names[index]))

    @property
    def num_classes(self) -> int:
        """Classes predicted by the main head: the output size of its last ``nn.Linear`` (whatever its name;
        override this property for a head without one)."""
        linears = [m for m in self.modules() if isinstance(m, nn.Linear)]
        if not linears:
            raise TypeError(
                f"{type(self).__name__} has no nn.Linear classifier: override StagedBackbone.num_classes to say "
                "how many classes its head predicts"
            )
        return linears[-1].out_features

    def forward(self, x: Tensor) -> Tensor:
        x = self.forward_stem(x)
        for name in self.stage_names:
            x = getattr(self, name)(x)
        return self.forward_head(x)


def module_plan(
    net: nn.Module,
    example: Tensor,
    stem: Callable[[nn.Module, Tensor], Tensor],
    stage_names: tuple[str, ...],
    head: Callable[[nn.Module, Tensor], Tensor],
    copy_stage,
    copy_head,
    source: str,
) -> StagePlan:
    """A plan whose stages are the ``nn.Sequential`` attributes ``stage_names`` of ``net``, run between ``stem`` and
    ``head``; channels and reductions are measured on ``example``."""
    was = net.training
    net.eval()
    shapes = []
    try:
        with torch.no_grad():
            h = stem(net, example)
            for name in stage_names:
                h = getattr(net, name)(h)
                shapes.append(tuple(h.shape))
            num_classes = head(net, h).shape[-1]
    finally:
        net.train(was)
    hw = example.shape[-1]
    stages = tuple(
        Stage(name, shape[1], max(1, round(hw / shape[-1])), len(getattr(net, name)), _runner(name), name)
        for name, shape in zip(stage_names, shapes)
    )
    return StagePlan(stem, stages, head, num_classes, source, copy_stage, copy_head, widths=True)


def _runner(name: str) -> Callable[[nn.Module, Tensor], Tensor]:
    return lambda root, x: getattr(root, name)(x)


@PLAN_SOURCES.register("dhm", priority=10)
def _own_plan(net: nn.Module, example: Tensor) -> StagePlan | None:
    """dhm's own backbones: their stem/head methods, their stage attributes, their stage builder."""
    if not isinstance(net, StagedBackbone):
        return None
    cls = type(net)
    plan = module_plan(
        net,
        example,
        cls.forward_stem,
        net.stage_names,
        cls.forward_head,
        lambda root, index, blocks, width, in_ch: root.build_stage(index, blocks, width, in_ch),
        lambda root, in_ch, classes: root.build_head(in_ch, classes),
        "dhm",
    )
    # A DenseNet stage ends in a transition that is not one of its blocks.
    blocks = [net.stage_blocks(i) for i in range(len(plan.stages))]
    return replace(plan, stages=tuple(replace(s, blocks=b) for s, b in zip(plan.stages, blocks)))


def init_conv_bn(module: nn.Module) -> None:
    """The released CIFAR init: conv weights ~ N(0, sqrt(2 / (k*k*out_channels))), BN weight 1 and bias 0;
    linear layers keep PyTorch's default."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / n))
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def scaled(channels: int, width: float) -> int:
    """``channels * width`` rounded to an integer, at least 1."""
    return max(1, round(channels * width))


def pooled_classifier(in_channels: int, num_classes: int, pre_norm: bool) -> nn.Sequential:
    """Global average pool + linear, optionally after BN-ReLU (WRN, DenseNet heads)."""
    layers: list[nn.Module] = [nn.BatchNorm2d(in_channels), nn.ReLU(inplace=True)] if pre_norm else []
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(in_channels, num_classes)]
    return nn.Sequential(*layers)


__all__ = [
    "StagedBackbone",
    "init_conv_bn",
    "module_plan",
    "pooled_classifier",
    "scaled",
]
