"""BYOT's shallow classifiers (Zhang et al., "Be Your Own Teacher", 2019): after stage i, an attention map
(separable conv at stride 2, BN, ReLU, upsampled back, sigmoid) gates the stage's features; a stack of separable
convolutions takes them to the last stage's resolution and channels; pool and a linear classifier. Each branch
also carries its hint map A_i (a linear layer to the deepest feature's size), so its ``features`` output is
A_i f_i, which the ``byot`` loss pulls towards the deepest head's (detached) feature.

Layout ``byot`` puts one after every stage but the last; ``byot:replicate`` uses the paper's replicated stages
(:func:`dhm.branches.builders.replicate`) as the classifiers instead, with the same hint maps.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .builders import BRANCH_BUILDERS, Branch, replicate
from .plan import StagePlan
from .spec import BranchSpec
from .staged import init_conv_bn, pooled_classifier


def sep_conv(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    """DARTS/BYOT separable convolution: (depthwise 3x3, pointwise 1x1, BN, ReLU) twice, the first at ``stride``."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_in, 3, stride, 1, groups=c_in, bias=False),
        nn.Conv2d(c_in, c_in, 1, bias=False),
        nn.BatchNorm2d(c_in),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_in, c_in, 3, 1, 1, groups=c_in, bias=False),
        nn.Conv2d(c_in, c_out, 1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class Attention(nn.Module):
    """BYOT's attention: a map from a stride-2 separable conv, upsampled back, through a sigmoid, times the input."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = sep_conv(channels, channels, 2)

    def forward(self, x: Tensor) -> Tensor:
        gate = F.interpolate(self.conv(x), size=x.shape[-2:], mode="bilinear", align_corners=False)
        return x * gate.sigmoid()


class HintBranch(Branch):
    """A branch whose ``features`` output is A_i f_i: its pooled feature through the hint map ``adapt``."""

    def __init__(self, inner: Branch, adapt: nn.Module) -> None:
        super().__init__(list(inner.stages), inner.head, inner.max_offset)
        self.adapt = adapt

    def forward(self, x: Tensor, main_feats=None, offset=None, features: bool = False):
        out = super().forward(x, main_feats, offset, features)
        return (out[0], self.adapt(out[1])) if features else out


@BRANCH_BUILDERS.register("byot")
def byot(plan: StagePlan, net: nn.Module, spec: BranchSpec, num_classes: int) -> Branch:
    """BYOT's attention + separable-conv classifier after stage ``spec.fork``, with its hint map."""
    fork = plan.index(spec.fork)
    if fork >= len(plan.stages) - 1:
        raise ValueError(f"a byot branch forks before the last stage, not at {spec.fork!r}")
    channels = plan.stages[fork].channels
    layers: list[nn.Module] = [Attention(channels)]
    for prev, stage in zip(plan.stages[fork:], plan.stages[fork + 1 :]):
        stride = max(1, round(stage.reduction / prev.reduction))
        layers.append(sep_conv(channels, stage.channels, stride))
        channels = stage.channels
    deepest = plan.stages[-1].channels
    branch = Branch([nn.Sequential(*layers)], pooled_classifier(channels, num_classes, pre_norm=False))
    init_conv_bn(branch)
    return HintBranch(branch, nn.Linear(channels, deepest))


@BRANCH_BUILDERS.register("byot-replicate")
def byot_replicate(plan: StagePlan, net: nn.Module, spec: BranchSpec, num_classes: int) -> Branch:
    """The paper's replicated stages as BYOT's classifier, with the hint map."""
    inner = replicate(plan, net, spec, num_classes)
    dims = [m.in_features for m in inner.head.modules() if isinstance(m, nn.Linear)]
    deepest = plan.stages[-1].channels
    return HintBranch(inner, nn.Linear(dims[-1] if dims else deepest, deepest))
