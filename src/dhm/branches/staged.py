"""Staged backbones: a network seen as stem -> ordered stages -> head, plus a stage builder.

Branches are built from this description only, so one mechanism serves every family. A family either
subclasses :class:`StagedBackbone` (dhm's own models) or gets an adapter registered for it (torchvision-style
ResNets, whose attribute names we must not change).
"""

from __future__ import annotations

import math
from collections.abc import Callable

from torch import Tensor, nn

from ..registry import Registry


class StagedBackbone(nn.Module):
    """Base class of dhm's own backbones: stem -> stages (``stage_names``) -> head, plus a stage builder.

    Subclasses implement ``forward_stem``, ``forward_head``, ``make_stage`` and ``stage_channels``; fresh branch
    stages and heads (``build_stage``, ``build_head``) then come for free, initialised like the backbone.
    ``forward`` is the plain composition, exactly what the branched model runs for its main head, so the deployed
    network and the trained main path are the same computation.
    """

    stage_names: tuple[str, ...] = ()
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


class StageAdapter:
    """How dhm sees a backbone family as stages. Every method takes the backbone; adapters hold no state."""

    def stage_names(self, net: nn.Module) -> tuple[str, ...]:
        raise NotImplementedError

    def forward_stem(self, net: nn.Module, x: Tensor) -> Tensor:
        raise NotImplementedError

    def forward_head(self, net: nn.Module, x: Tensor) -> Tensor:
        raise NotImplementedError

    def build_stage(
        self, net: nn.Module, index: int, blocks: int, width: float, in_channels: int
    ) -> tuple[nn.Sequential, int]:
        raise NotImplementedError

    def build_head(self, net: nn.Module, in_channels: int, num_classes: int) -> nn.Module:
        raise NotImplementedError

    def stage_channels(self, net: nn.Module, index: int) -> int:
        raise NotImplementedError

    def stage_blocks(self, net: nn.Module, index: int) -> int:
        raise NotImplementedError

    def num_classes(self, net: nn.Module) -> int:
        raise NotImplementedError

    def stages(self, net: nn.Module) -> list[nn.Sequential]:
        """The stage modules, in order."""
        return [getattr(net, n) for n in self.stage_names(net)]

    def stage_index(self, net: nn.Module, fork: str | int) -> int:
        """A stage given by name or index, as an index; raises on unknown names."""
        names = self.stage_names(net)
        if isinstance(fork, int):
            if not -len(names) <= fork < len(names):
                raise ValueError(f"fork index {fork} out of range for stages {list(names)}")
            return fork % len(names)
        if fork not in names:
            raise ValueError(f"unknown fork stage {fork!r}; this backbone's stages are {list(names)}")
        return names.index(fork)


class _OwnStaged(StageAdapter):
    """Adapter for :class:`StagedBackbone` subclasses: delegates to the model's own methods."""

    def stage_names(self, net: nn.Module) -> tuple[str, ...]:
        return net.stage_names

    def forward_stem(self, net: nn.Module, x: Tensor) -> Tensor:
        return net.forward_stem(x)

    def forward_head(self, net: nn.Module, x: Tensor) -> Tensor:
        return net.forward_head(x)

    def build_stage(self, net, index, blocks, width, in_channels):
        return net.build_stage(index, blocks, width, in_channels)

    def build_head(self, net, in_channels, num_classes):
        return net.build_head(in_channels, num_classes)

    def stage_channels(self, net: nn.Module, index: int) -> int:
        return net.stage_channels(index)

    def stage_blocks(self, net: nn.Module, index: int) -> int:
        return net.stage_blocks(index)

    def num_classes(self, net: nn.Module) -> int:
        return net.num_classes


ADAPTERS: Registry[tuple[Callable[[nn.Module], bool], StageAdapter]] = Registry("backbone adapter")


def register_adapter(name: str, matches: Callable[[nn.Module], bool], adapter: StageAdapter) -> None:
    """Teach dhm a new backbone family: ``matches(net)`` says whether ``adapter`` applies to ``net``."""
    ADAPTERS.register(name)((matches, adapter))


def find_adapter(net: nn.Module) -> str:
    """Name of the first registered adapter that accepts ``net``; raises a clear error when none does."""
    for name in ADAPTERS:
        matches, _ = ADAPTERS.get(name)
        if matches(net):
            return name
    raise TypeError(
        f"dhm does not know how to split a {type(net).__name__} into stages; subclass dhm.StagedBackbone "
        f"or register an adapter with dhm.register_adapter (known: {', '.join(ADAPTERS.list())})"
    )


def get_adapter(name: str) -> StageAdapter:
    """The adapter registered under ``name``."""
    return ADAPTERS.get(name)[1]


register_adapter("staged", lambda net: isinstance(net, StagedBackbone), _OwnStaged())


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
    return max(1, int(round(channels * width)))


def pooled_classifier(in_channels: int, num_classes: int, pre_norm: bool) -> nn.Sequential:
    """Global average pool + linear, optionally after BN-ReLU (WRN, DenseNet heads)."""
    layers: list[nn.Module] = [nn.BatchNorm2d(in_channels), nn.ReLU(inplace=True)] if pre_norm else []
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(in_channels, num_classes)]
    return nn.Sequential(*layers)


__all__ = [
    "StageAdapter",
    "StagedBackbone",
    "find_adapter",
    "get_adapter",
    "init_conv_bn",
    "pooled_classifier",
    "register_adapter",
    "scaled",
]
