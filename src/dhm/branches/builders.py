"""Branch builders: ``replicate`` (the paper's: copies of the downstream stages), ``light`` (DSN-style, as the DHM and
DKS papers run DSN) and ``linear`` (DSN's authors': a linear classifier on the unpooled map)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import math

import torch
from torch import Tensor, nn

from ..registry import Registry
from .plan import StagePlan
from .spec import BranchSpec
from .staged import init_conv_bn, pooled_classifier, scaled


class Branch(nn.Module):
    """A side branch: replicated stages (maybe none) then a head.

    ``max_offset`` is the largest stochastic fork offset j (docs/method.md section 4.2) at which the branch can take
    over the main network's features inside its first stage; 0 means the branch always forks at the boundary.
    """

    def __init__(self, stages: Sequence[nn.Module], head: nn.Module, max_offset: int = 0) -> None:
        super().__init__()
        self.stages = nn.ModuleList(stages)
        self.head = head
        self.max_offset = max_offset

    def forward(
        self,
        x: Tensor,
        main_feats: Sequence[Tensor] | None = None,
        offset: Tensor | None = None,
        features: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Branch logits from the fork features ``x`` (with ``features``: the logits and the head's input map
        averaged over space).

        With ``main_feats`` (the main network's outputs after each block of the first replicated stage,
        ``main_feats[0] == x``) and a scalar ``offset`` j, the branch's first j blocks are replaced by the main
        network's. They are still computed and masked out with ``torch.where``, so every parameter stays in the
        graph (DDP needs no unused-parameter search) and the graph does not depend on j (no recompiles).
        """
        stages = iter(self.stages)
        if main_feats is not None and offset is not None and self.max_offset > 0:
            for i, block in enumerate(next(stages)):
                x = block(x)
                if i < self.max_offset:
                    x = torch.where(offset == i + 1, main_feats[i + 1], x)
        for stage in stages:
            x = stage(x)
        return (self.head(x), x.mean((2, 3))) if features else self.head(x)


BranchBuilder = Callable[[StagePlan, nn.Module, BranchSpec, int], Branch]
BRANCH_BUILDERS: Registry[BranchBuilder] = Registry("branch builder")


@BRANCH_BUILDERS.register("replicate")
def replicate(plan: StagePlan, net: nn.Module, spec: BranchSpec, num_classes: int) -> Branch:
    """The paper's branch: fresh copies of every stage after the fork (own depths and widths) plus a fresh head."""
    fork = plan.index(spec.fork)
    remaining = list(range(fork + 1, len(plan.stages)))
    if not remaining:
        raise ValueError(f"a replicate branch cannot fork after the last stage ({spec.fork!r}); use builder='light'")
    depths = spec.depths or tuple(plan.stages[s].blocks for s in remaining)
    if len(depths) != len(remaining):
        raise ValueError(
            f"branch forking at {spec.fork!r} must replicate {len(remaining)} stages, got depths {spec.depths}"
        )
    widths = spec.widths(len(remaining))
    if not plan.widths and any(w != 1.0 for w in widths):
        raise ValueError(
            f"branch width {spec.width} needs a stage builder, which only dhm's own model families have; "
            f"{type(net).__name__}'s branches copy its stages at width 1 (plan from {plan.source})"
        )
    channels = plan.stages[fork].channels
    stages = []
    for index, blocks, width in zip(remaining, depths, widths):
        stage, channels = plan.copy_stage(net, index, blocks, width, channels)
        stages.append(stage)
    head = plan.copy_head(net, channels, num_classes)
    # The stochastic fork point (docs/method.md 4.2) needs the first replicated stage at the backbone's own width,
    # as a sequence of blocks on both sides.
    first = plan.stages[remaining[0]]
    blockwise = widths[0] == 1.0 and first.sequential is not None and isinstance(stages[0], nn.Sequential)
    max_offset = min(depths[0], first.blocks) if blockwise else 0
    return Branch(stages, head, max_offset)


@BRANCH_BUILDERS.register("light")
def light(plan: StagePlan, net: nn.Module, spec: BranchSpec, num_classes: int) -> Branch:
    """A DSN-style auxiliary classifier: conv3x3-BN-ReLU at ``width`` x the fork's channels, pool, linear."""
    in_ch = plan.stages[plan.index(spec.fork)].channels
    out_ch = scaled(in_ch, spec.widths(1)[0])
    stage = nn.Sequential(
        nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False), nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True)
    )
    branch = Branch([stage], pooled_classifier(out_ch, num_classes, pre_norm=False))
    init_conv_bn(branch)
    return branch


class UnpooledLinear(nn.Module):
    """A linear classifier on a stage's whole map (channels x side x side inputs), as DSN's authors' companion
    classifiers (s9xie/DSN, examples/*/cifar-10.prototxt: ``innerproduct`` on the conv output, Caffe's xavier
    filler, zero bias)."""

    def __init__(self, channels: int, side: int, num_classes: int) -> None:
        super().__init__()
        self.side = side
        self.fc = nn.Linear(channels * side * side, num_classes)
        bound = math.sqrt(3.0 / self.fc.in_features)  # Caffe's xavier: uniform(+-sqrt(3 / fan_in))
        nn.init.uniform_(self.fc.weight, -bound, bound)
        nn.init.zeros_(self.fc.bias)

    def forward(self, x: Tensor) -> Tensor:
        if tuple(x.shape[-2:]) != (self.side, self.side):
            raise ValueError(
                f"a linear-every-stage head was built for {self.side}x{self.side} maps, got {tuple(x.shape[-2:])}: "
                "give the input side as model.branches=linear-every-stage:SIDE"
            )
        return self.fc(x.flatten(1))


@BRANCH_BUILDERS.register("linear")
def linear(plan: StagePlan, net: nn.Module, spec: BranchSpec, num_classes: int) -> Branch:
    """DSN's authors' companion: a linear classifier on the fork's unpooled map, whose side is ``spec.depths[0]``."""
    if len(spec.depths) != 1:
        raise ValueError("a linear branch reads its map's side from depths=(side,)")
    channels = plan.stages[plan.index(spec.fork)].channels
    return Branch([], UnpooledLinear(channels, spec.depths[0], num_classes))
