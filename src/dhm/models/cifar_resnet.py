"""CIFAR ResNets (depth 6n+2) with the parameter-free option-A shortcut, as released."""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn

from ..branches import BranchSpec, StagedBackbone
from ..branches.staged import init_conv_bn, scaled
from .registry import register_model
from .strides import check_last_stride


class ShortcutA(nn.Module):
    """Option A: 2x2 average pooling when the stride is 2, then zero channels appended (no parameters)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.extra = out_channels - in_channels

    def forward(self, x: Tensor) -> Tensor:
        if self.stride > 1:
            x = F.avg_pool2d(x, self.stride)
        return F.pad(x, (0, 0, 0, 0, 0, self.extra)) if self.extra else x


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN, plus the shortcut, then ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        needs = stride != 1 or in_channels != out_channels
        self.shortcut = ShortcutA(in_channels, out_channels, stride) if needs else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class CifarResNet(StagedBackbone):
    """ResNet for 32x32 inputs: conv 16 -> three stages of ``n`` basic blocks (16/32/64) -> pool -> linear."""

    stage_names = ("layer1", "layer2", "layer3")
    strides = (1, 2, 2)

    def __init__(
        self,
        depth: int = 32,
        num_classes: int = 100,
        widths: tuple[int, int, int] = (16, 32, 64),
        in_channels: int = 3,
        last_stride: int = 2,
    ) -> None:
        super().__init__()
        self.strides = (1, 2, check_last_stride(last_stride))  # last_stride=1 keeps the resolution (re-ID)
        if (depth - 2) % 6 != 0:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        n = (depth - 2) // 6
        if len(widths) != 3:
            raise ValueError(f"model.widths needs one width per stage (3), got {list(widths)}")
        self.widths = tuple(widths)
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        channels = widths[0]
        for i, name in enumerate(self.stage_names):
            stage, channels = self.make_stage(i, n, 1.0, channels)
            setattr(self, name, stage)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)
        init_conv_bn(self)

    def make_stage(self, index: int, blocks: int, width: float, in_channels: int) -> tuple[nn.Sequential, int]:
        out = scaled(self.widths[index], width)
        layers = [
            BasicBlock(in_channels if b == 0 else out, out, self.strides[index] if b == 0 else 1) for b in range(blocks)
        ]
        return nn.Sequential(*layers), out

    def forward_stem(self, x: Tensor) -> Tensor:
        return self.relu(self.bn1(self.conv1(x)))

    def forward_head(self, x: Tensor) -> Tensor:
        return self.fc(self.avgpool(x).flatten(1))

    def stage_channels(self, index: int) -> int:
        return self.widths[index]


def _layout(n: int, head2: tuple[int, int] | None = None) -> list[BranchSpec]:
    """Head 1 forks after stage 2 and rebuilds stage 3 (n blocks, 2x width); head 2 forks after stage 1 and
    rebuilds stages 2 and 3 (released: ``head2``; otherwise [ours] n and ceil(n/2) blocks)."""
    head2 = head2 or (n, math.ceil(n / 2))
    return [BranchSpec("layer2", (n,), 2.0), BranchSpec("layer1", head2)]


@register_model(_layout(3))
def cifar_resnet20(**kwargs) -> CifarResNet:
    """CIFAR ResNet-20 (n=3)."""
    return CifarResNet(**{"depth": 20, **kwargs})


@register_model(_layout(5))
def cifar_resnet32(**kwargs) -> CifarResNet:
    """CIFAR ResNet-32 (n=5)."""
    return CifarResNet(**{"depth": 32, **kwargs})


@register_model(_layout(9))
def cifar_resnet56(**kwargs) -> CifarResNet:
    """CIFAR ResNet-56 (n=9)."""
    return CifarResNet(**{"depth": 56, **kwargs})


@register_model(_layout(18, head2=(9, 9)))
def cifar_resnet110(**kwargs) -> CifarResNet:
    """CIFAR ResNet-110 (n=18)."""
    return CifarResNet(**{"depth": 110, **kwargs})


@register_model(_layout(200, head2=(100, 100)))
def cifar_resnet1202(**kwargs) -> CifarResNet:
    """CIFAR ResNet-1202 (n=200)."""
    return CifarResNet(**{"depth": 1202, **kwargs})
