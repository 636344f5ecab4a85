"""ImageNet ResNets with torchvision's architecture and parameter names (a stripped model loads into
``torchvision.models.resnetXX``), plus the stage plan that lets dhm branch torchvision's own ResNets at any branch width."""

from __future__ import annotations

from torch import Tensor, nn

from ..branches import BranchSpec
from ..branches.plan import PLAN_SOURCES, StagePlan, traced_plan
from ..branches.staged import scaled
from .registry import register_model
from .strides import check_last_stride


def _conv3x3(in_planes: int, out_planes: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, 3, stride, 1, groups=groups, bias=False)


def _conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, 1, stride, bias=False)


class BasicBlock(nn.Module):
    """torchvision's BasicBlock (same attribute names)."""

    expansion = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        groups: int = 1,
        base_width: int = 64,
    ) -> None:
        super().__init__()
        self.conv1 = _conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """torchvision's Bottleneck (ResNet v1.5: stride on the 3x3 conv)."""

    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        groups: int = 1,
        base_width: int = 64,
    ) -> None:
        super().__init__()
        width = int(planes * (base_width / 64.0)) * groups
        self.conv1 = _conv1x1(inplanes, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = _conv3x3(width, width, stride, groups)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = _conv1x1(width, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


BLOCKS = {1: BasicBlock, 4: Bottleneck}  # by expansion, which also identifies torchvision's block classes
PLANES = (64, 128, 256, 512)
STAGES = ("layer1", "layer2", "layer3", "layer4")


def make_layer(
    block: type[nn.Module], inplanes: int, planes: int, blocks: int, stride: int, groups: int = 1, base_width: int = 64
) -> tuple[nn.Sequential, int]:
    """torchvision's ``_make_layer``, freshly initialised as torchvision does; returns the layer and its output
    channels."""
    out = planes * block.expansion
    downsample = None
    if stride != 1 or inplanes != out:
        downsample = nn.Sequential(_conv1x1(inplanes, out, stride), nn.BatchNorm2d(out))
    layers = [block(inplanes, planes, stride, downsample, groups, base_width)]
    layers += [block(out, planes, 1, None, groups, base_width) for _ in range(1, blocks)]
    layer = nn.Sequential(*layers)
    _init_torchvision(layer)
    return layer, out


def _init_torchvision(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def _copy_stage(net: nn.Module, index: int, blocks: int, width: float, in_channels: int) -> tuple[nn.Sequential, int]:
    block = BLOCKS[getattr(net, STAGES[0])[0].expansion]
    planes = scaled(PLANES[index], width)
    groups, base_width = getattr(net, "groups", 1), getattr(net, "base_width", 64)
    stride = getattr(net, "strides", (1, 2, 2, 2))[index]  # a branch copy keeps the backbone's last stride
    return make_layer(block, in_channels, planes, blocks, stride, groups, base_width)


def _copy_head(net: nn.Module, in_channels: int, num_classes: int) -> nn.Module:
    return nn.Sequential(nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten(1), nn.Linear(in_channels, num_classes))


def _looks_like_torchvision_resnet(net: nn.Module) -> bool:
    names = ("conv1", "bn1", "relu", "maxpool", *STAGES, "avgpool", "fc")
    return all(hasattr(net, n) for n in names) and getattr(net.layer1[0], "expansion", None) in BLOCKS


@PLAN_SOURCES.register("torchvision_resnet", priority=20)
def _resnet_plan(net: nn.Module, example: Tensor) -> StagePlan | None:
    """Modules laid out like torchvision's ResNet (dhm's own ImageNet ResNets and torchvision's, ResNeXt and wide
    ones too): stages ``layer1..4``, cut from the traced forward; branch stages built by dhm at any width."""
    if not _looks_like_torchvision_resnet(net):
        return None
    return traced_plan(net, example, list(STAGES), "torchvision_resnet", _copy_stage, _copy_head)


class ResNet(nn.Module):
    """torchvision's ResNet (same parameter names and initialisation), adaptive average pooling, any input size.

    It is deliberately not a :class:`StagedBackbone`: it is branched through the same stage plan as
    ``torchvision.models.resnet50()`` itself, so both take one code path.
    """

    def __init__(
        self,
        block: type[nn.Module],
        layers: tuple[int, int, int, int],
        num_classes: int = 1000,
        groups: int = 1,
        width_per_group: int = 64,
        in_channels: int = 3,
        last_stride: int = 2,
    ) -> None:
        super().__init__()
        self.groups, self.base_width = groups, width_per_group
        self.strides = (1, 2, 2, check_last_stride(last_stride))  # last_stride=1: layer4 at 1/16 (re-ID)
        self.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        channels = 64
        for i, (name, blocks) in enumerate(zip(STAGES, layers)):
            layer, channels = make_layer(block, channels, PLANES[i], blocks, self.strides[i], groups, width_per_group)
            setattr(self, name, layer)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(channels, num_classes)
        _init_torchvision(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.avgpool(x).flatten(1))


def _layout(head2: tuple[int, int], head1: int) -> list[BranchSpec]:
    """Head 1 forks after layer3: layer4 (``head1`` blocks, 2x planes); head 2 after layer2: layer3, layer4."""
    return [BranchSpec("layer3", (head1,), 2.0), BranchSpec("layer2", head2)]


@register_model(_layout((1, 2), 2))
def resnet18(**kwargs) -> ResNet:
    """ResNet-18, torchvision layout."""
    return ResNet(**{"block": BasicBlock, "layers": (2, 2, 2, 2), **kwargs})


@register_model(_layout((3, 2), 3))
def resnet34(**kwargs) -> ResNet:
    """ResNet-34, torchvision layout."""
    return ResNet(**{"block": BasicBlock, "layers": (3, 4, 6, 3), **kwargs})


@register_model(_layout((3, 2), 3))
def resnet50(**kwargs) -> ResNet:
    """ResNet-50, torchvision layout."""
    return ResNet(**{"block": Bottleneck, "layers": (3, 4, 6, 3), **kwargs})


@register_model(_layout((12, 2), 3))
def resnet101(**kwargs) -> ResNet:
    """ResNet-101, torchvision layout."""
    return ResNet(**{"block": Bottleneck, "layers": (3, 4, 23, 3), **kwargs})


@register_model(_layout((18, 2), 3))
def resnet152(**kwargs) -> ResNet:
    """ResNet-152, torchvision layout."""
    return ResNet(**{"block": Bottleneck, "layers": (3, 8, 36, 3), **kwargs})
