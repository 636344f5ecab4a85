"""Wide ResNets WRN-d-k (depth 6n+4) with pre-activation blocks; dropout is applied when set."""

from __future__ import annotations

import math

from torch import Tensor, nn

from ..branches import BranchSpec, StagedBackbone
from ..branches.staged import init_conv_bn, scaled
from .registry import register_model


class WideBasic(nn.Module):
    """BN-ReLU-conv3x3-BN-ReLU-[dropout]-conv3x3; a 1x1 conv shortcut on the pre-activated input when the shape
    changes."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu2 = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.equal = in_channels == out_channels and stride == 1
        self.shortcut = None if self.equal else nn.Conv2d(in_channels, out_channels, 1, stride, 0, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        pre = self.relu1(self.bn1(x))
        out = self.conv2(self.dropout(self.relu2(self.bn2(self.conv1(pre)))))
        return out + (x if self.shortcut is None else self.shortcut(pre))


class WideResNet(StagedBackbone):
    """conv 16 -> three stages of ``n`` wide blocks (16k/32k/64k) -> BN-ReLU -> pool -> linear."""

    stage_names = ("block1", "block2", "block3")
    head_pre_norm = True
    strides = (1, 2, 2)

    def __init__(
        self, depth: int = 28, widen: int = 10, num_classes: int = 100, dropout: float = 0.0, in_channels: int = 3
    ) -> None:
        super().__init__()
        if (depth - 4) % 6 != 0:
            raise ValueError(f"WRN depth must be 6n+4, got {depth}")
        n = (depth - 4) // 6
        self.dropout_rate = dropout
        self.widths = (16 * widen, 32 * widen, 64 * widen)
        self.conv1 = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        channels = 16
        for i, name in enumerate(self.stage_names):
            stage, channels = self.make_stage(i, n, 1.0, channels)
            setattr(self, name, stage)
        self.bn = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)
        init_conv_bn(self)

    def make_stage(self, index: int, blocks: int, width: float, in_channels: int) -> tuple[nn.Sequential, int]:
        out = scaled(self.widths[index], width)
        layers = [
            WideBasic(in_channels if b == 0 else out, out, self.strides[index] if b == 0 else 1, self.dropout_rate)
            for b in range(blocks)
        ]
        return nn.Sequential(*layers), out

    def forward_stem(self, x: Tensor) -> Tensor:
        return self.conv1(x)

    def forward_head(self, x: Tensor) -> Tensor:
        return self.fc(self.avgpool(self.relu(self.bn(x))).flatten(1))

    def stage_channels(self, index: int) -> int:
        return self.widths[index]


def _layout(n: int) -> list[BranchSpec]:
    """Head 1 forks after stage 2: stage 3 (n blocks, 2x); head 2 after stage 1: stages 2 (n) and 3 (ceil(n/2))."""
    return [BranchSpec("block2", (n,), 2.0), BranchSpec("block1", (n, math.ceil(n / 2)))]


@register_model(_layout(2))
def wrn16_8(**kwargs) -> WideResNet:
    """WRN-16-8 (n=2)."""
    return WideResNet(**{"depth": 16, "widen": 8, **kwargs})


@register_model(_layout(4))
def wrn28_10(**kwargs) -> WideResNet:
    """WRN-28-10 (n=4); the paper's recipe uses dropout 0.3."""
    return WideResNet(**{"depth": 28, "widen": 10, **kwargs})
