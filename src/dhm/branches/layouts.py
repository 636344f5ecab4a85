"""Named branch layouts of the sibling methods, for any backbone with a stage plan: ``model.branches`` takes a
name (``light-every-stage``, ``peers:K``) as well as ``paper``, ``none`` or a list of specs.

* ``light-every-stage``: a light (DSN-style) classifier after every stage but the last (Lee et al., 2015);
* ``linear-every-stage:S``: DSN's authors' companions, a linear classifier on the unpooled map after every stage but
  the last, for inputs of S x S pixels (default 32);
* ``peers:K``: K - 1 full copies of the backbone beside it, each from the input (DML, Zhang et al., 2018);
  ``peers`` alone is ``peers:2``;
* ``byot``: BYOT's attention + separable-conv classifier after every stage but the last (``byot:replicate``: the
  replicated stages instead), each with its hint map (:mod:`dhm.branches.byot`);
* ``one:m``: the stages after the second-to-last stage boundary copied m - 1 times beside the main path, plus
  ONE's gate over the m heads (Lan et al., 2018); ``one`` alone is ``one:3``;
* ``okddip:m``: ONE's trunk with m peers (default 3) as branches and the main path as the leader, with attention
  over the peers (Chen et al., 2020).
"""

from __future__ import annotations

import copy
from collections.abc import Callable

from torch import Tensor, nn

from ..registry import Registry
from .builders import BRANCH_BUILDERS, Branch
from .plan import StagePlan
from .spec import BranchSpec
from .staged import init_conv_bn

Layout = Callable[[StagePlan, str], list[BranchSpec]]
LAYOUTS: Registry[Layout] = Registry("branch layout")


def _count(arg: str, default: int, form: str, need: str) -> int:
    """The count ``arg`` of a layout such as ``peers:K`` (``default`` when absent), at least 2."""
    try:
        count = int(arg or default)
    except ValueError:
        raise ValueError(f"{form} takes a count, got {arg!r}") from None
    if count < 2:
        raise ValueError(f"{form} needs {need}, got {count}")
    return count


@LAYOUTS.register("light-every-stage")
def light_every_stage(plan: StagePlan, arg: str) -> list[BranchSpec]:
    """A light classifier after every stage but the last (the main head is after the last)."""
    return [BranchSpec(fork=i, builder="light") for i in range(len(plan.stages) - 1)]


@LAYOUTS.register("linear-every-stage")
def linear_every_stage(plan: StagePlan, arg: str) -> list[BranchSpec]:
    """A linear classifier on the unpooled map after every stage but the last, for ``arg`` x ``arg`` inputs."""
    side = _count(arg, 32, "linear-every-stage:S", "an input side S >= 2 pixels")
    specs = []
    for i in range(len(plan.stages) - 1):
        if side % plan.stages[i].reduction:
            raise ValueError(f"linear-every-stage:{side}: stage {i} divides its input by {plan.stages[i].reduction}")
        specs.append(BranchSpec(fork=i, builder="linear", depths=(side // plan.stages[i].reduction,)))
    return specs


@LAYOUTS.register("peers")
def peers(plan: StagePlan, arg: str) -> list[BranchSpec]:
    """``K - 1`` full copies of the backbone (K = ``arg``, default 2), each reading the input."""
    count = _count(arg, 2, "peers:K", "K >= 2 networks")
    return [BranchSpec(fork="input", builder="peer") for _ in range(count - 1)]


@LAYOUTS.register("byot")
def byot(plan: StagePlan, arg: str) -> list[BranchSpec]:
    """A BYOT classifier after every stage but the last (``byot:replicate``: replicated stages instead)."""
    if arg not in ("", "replicate"):
        raise ValueError(f"byot takes no option or 'replicate', got {arg!r}")
    builder = "byot-replicate" if arg else "byot"
    return [BranchSpec(fork=i, builder=builder) for i in range(len(plan.stages) - 1)]


@LAYOUTS.register("one", extras=("gate",))
def one(plan: StagePlan, arg: str) -> list[BranchSpec]:
    """``m - 1`` copies of the last stage(s) forking where ONE forks (before the last stage), gated."""
    count = _count(arg, 3, "one:m", "m >= 2 branches")
    if len(plan.stages) < 2:
        raise ValueError("one:m forks before the last stage: the backbone needs two stages or more")
    return [BranchSpec(fork=len(plan.stages) - 2) for _ in range(count - 1)]


@LAYOUTS.register("okddip", extras=("attention",))
def okddip(plan: StagePlan, arg: str) -> list[BranchSpec]:
    """``m`` peers (default 3) forking where ONE forks, with attention over them; the main path is the leader."""
    return one(plan, str(_count(arg, 3, "okddip:m", "m >= 2 peers") + 1))


def layout_extras(name: str) -> tuple[str, ...]:
    """The extras (:mod:`dhm.branches.extras`: ONE's ``gate``, OKDDip's ``attention``) the named layout adds."""
    return tuple(LAYOUTS.meta(name.partition(":")[0]).get("extras", ()))


def layout_specs(name: str, plan: StagePlan) -> list[BranchSpec]:
    """The specs of the named layout ``name`` (``NAME`` or ``NAME:ARG``) on ``plan``."""
    base, _, arg = name.partition(":")
    return LAYOUTS.get(base)(plan, arg)


class _Whole(nn.Module):
    """A copy of a whole backbone as a branch stage: input images in, logits out."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class PeerBranch(Branch):
    """A full, independently initialised copy of the backbone (DML's peer): it reads the input, not a fork."""

    def forward(self, x: Tensor, main_feats=None, offset=None, features: bool = False):
        logits = self.stages[0](x)
        if features:
            raise ValueError("a peer branch (DML) gives logits only; its methods read no features")
        return logits


@BRANCH_BUILDERS.register("peer")
def peer(plan: StagePlan, net: nn.Module, spec: BranchSpec, num_classes: int) -> Branch:
    """A fresh copy of the whole backbone, re-initialised (conv/BN as released, linear layers reset): a DML peer
    shares no parameter with the main network."""
    if spec.fork != "input":
        raise ValueError(f"a peer branch reads the input: fork='input', got {spec.fork!r}")
    clone = copy.deepcopy(net)
    for module in clone.modules():
        if isinstance(module, nn.Linear):
            module.reset_parameters()
    init_conv_bn(clone)
    return PeerBranch([_Whole(clone)], nn.Identity())
