"""CIFAR DenseNets: basic (DenseNet-40-12) and BC (bottleneck + compression, DenseNet-BC-100-12).

A stage is a dense block followed by its transition (none after the last block), so the stage boundaries are
the points after the transitions where the paper's branches fork.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..branches import BranchSpec, StagedBackbone
from ..branches.staged import init_conv_bn, scaled
from .registry import register_model


class DenseLayer(nn.Module):
    """BN-ReLU-conv3x3 to ``growth`` (basic) or BN-ReLU-conv1x1 to 4*growth, BN-ReLU-conv3x3 (BC); concatenated."""

    def __init__(self, in_channels: int, growth: int, bottleneck: bool) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        if bottleneck:
            inter = 4 * growth
            layers += [nn.BatchNorm2d(in_channels), nn.ReLU(inplace=True), nn.Conv2d(in_channels, inter, 1, bias=False)]
            in_channels = inter
        layers += [
            nn.BatchNorm2d(in_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(in_channels, growth, 3, 1, 1, bias=False),
        ]
        self.body = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([x, self.body(x)], 1)


class Transition(nn.Sequential):
    """BN-ReLU-conv1x1 (compressing by theta) then 2x2 average pooling."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.BatchNorm2d(in_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(in_channels, out_channels, 1, bias=False),
            nn.AvgPool2d(2),
        )


class DenseNet(StagedBackbone):
    """conv -> three (dense block [+ transition]) stages -> BN-ReLU -> pool -> linear."""

    stage_names = ("block1", "block2", "block3")
    head_pre_norm = True

    def __init__(
        self,
        depth: int = 100,
        growth: int = 12,
        bottleneck: bool = True,
        compression: float = 0.5,
        num_classes: int = 100,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        per_layer = 6 if bottleneck else 3  # convolutions per dense layer, times 3 blocks
        if (depth - 4) % per_layer != 0:
            raise ValueError(f"DenseNet depth must be {per_layer}n+4 (bottleneck={bottleneck}), got {depth}")
        n = (depth - 4) // per_layer
        self.growth, self.bottleneck, self.compression, self.layers_per_block = growth, bottleneck, compression, n
        stem = 2 * growth if bottleneck else 16
        self.conv1 = nn.Conv2d(in_channels, stem, 3, 1, 1, bias=False)
        channels = stem
        self._channels = []
        for i, name in enumerate(self.stage_names):
            stage, channels = self.make_stage(i, n, 1.0, channels)
            setattr(self, name, stage)
            self._channels.append(channels)
        self.bn = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)
        init_conv_bn(self)

    def make_stage(self, index: int, blocks: int, width: float, in_channels: int) -> tuple[nn.Sequential, int]:
        growth = scaled(self.growth, width)
        layers: list[nn.Module] = []
        channels = in_channels
        for _ in range(blocks):
            layers.append(DenseLayer(channels, growth, self.bottleneck))
            channels += growth
        if index < len(self.stage_names) - 1:
            out = int(math.floor(channels * self.compression))
            layers.append(Transition(channels, out))
            channels = out
        return nn.Sequential(*layers), channels

    def forward_stem(self, x: Tensor) -> Tensor:
        return self.conv1(x)

    def forward_head(self, x: Tensor) -> Tensor:
        return self.fc(self.avgpool(self.relu(self.bn(x))).flatten(1))

    def stage_channels(self, index: int) -> int:
        return self._channels[index]

    def stage_blocks(self, index: int) -> int:
        return self.layers_per_block


@register_model([BranchSpec("block2", (12,), 3.0), BranchSpec("block1", (12, 6))])
def densenet40_12(**kwargs) -> DenseNet:
    """DenseNet-40 (basic, growth 12, no compression)."""
    return DenseNet(**{"depth": 40, "growth": 12, "bottleneck": False, "compression": 1.0, **kwargs})


@register_model([BranchSpec("block2", (32,), 3.0), BranchSpec("block1", (16, 16))])
def densenet_bc_100_12(**kwargs) -> DenseNet:
    """DenseNet-BC-100 (growth 12, bottleneck, compression 0.5)."""
    return DenseNet(**{"depth": 100, "growth": 12, "bottleneck": True, "compression": 0.5, **kwargs})
