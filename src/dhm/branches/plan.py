"""StagePlan: a CNN as stem -> ordered stages -> head, resolved once when branches are attached.

A plan is data: the parts of the backbone's own forward as functions ``part(backbone, x)``, each stage's output
channels, spatial reduction and number of module calls, and how to make a fresh copy of a stage or of the head for
a branch. The branched model holds its plan; nothing is looked up by name at forward time, the backbone's forward
is not re-implemented, and its parameter names never change.

Where a plan comes from, in order (``stage_plan``): stages passed by hand (module paths); dhm's own models
(:class:`~dhm.branches.staged.StagedBackbone` and the torchvision-layout ResNets, which also know how to build a
stage at another width); timm models, from their ``feature_info``; any other model, by tracing it with torch.fx
and cutting where the resolution drops (``dhm.branches.trace``). Register another source with
``PLAN_SOURCES.register(name, priority=...)``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import torch
from torch import Tensor, nn

from ..registry import Registry
from . import trace, trace_parts
from .neck import BNNeck, replace_last_linear
from .trace import PartFn, SplitError

#: ``(backbone, index, blocks, width, in_channels) -> (fresh stage, its output channels)``
StageCopier = Callable[[nn.Module, int, int, float, int], tuple[nn.Module, int]]
#: ``(backbone, in_channels, num_classes) -> fresh head``
HeadCopier = Callable[[nn.Module, int, int], nn.Module]


@dataclass(frozen=True)
class Stage:
    """One stage of a plan.

    Attributes:
        name: the module path that ends the stage (a fork may be given by it).
        channels: output channels.
        reduction: input size / output size.
        blocks: module calls in the stage (what ``BranchSpec.depths`` counts).
        run: ``run(backbone, x)``, the stage's part of the backbone's forward.
        sequential: path of the ``nn.Sequential`` this stage is, when it is exactly one (block-wise features for
            the stochastic fork point, docs/method.md 4.2), else ``None``.
    """

    name: str
    channels: int
    reduction: int
    blocks: int
    run: PartFn
    sequential: str | None = None


@dataclass(frozen=True)
class StagePlan:
    """Stem -> stages -> head of one backbone, and how to copy its stages and head for branches."""

    stem: PartFn
    stages: tuple[Stage, ...]
    head: PartFn
    num_classes: int
    source: str
    copy_stage: StageCopier = field(repr=False)
    copy_head: HeadCopier = field(repr=False)
    widths: bool = False  # whether copy_stage builds other widths than 1

    def index(self, fork: str | int) -> int:
        """A stage given by name or index, as an index; a clear error for unknown ones."""
        names = [s.name for s in self.stages]
        if fork == "input":  # a branch that reads the input itself (a DML peer)
            return -1
        if isinstance(fork, int) and not isinstance(fork, bool):
            if not -len(names) <= fork < len(names):
                raise ValueError(f"fork index {fork} out of range: this backbone has {len(names)} stages {names}")
            return fork % len(names)
        if fork not in names:
            raise ValueError(f"unknown fork stage {fork!r}; this backbone's stages are {names}")
        return names.index(fork)

    def __repr__(self) -> str:
        stages = ", ".join(f"{s.name} ({s.channels} ch, /{s.reduction}, {s.blocks} blocks)" for s in self.stages)
        return f"StagePlan(source={self.source!r}, stages=[{stages}], num_classes={self.num_classes})"

    def describe(self) -> list[dict[str, object]]:
        """One row per stage: index, module, channels, reduction, module calls."""
        return [
            {"stage": i, "module": s.name, "channels": s.channels, "reduction": s.reduction, "blocks": s.blocks}
            for i, s in enumerate(self.stages)
        ]


PlanSource = Callable[[nn.Module, "Tensor"], "StagePlan | None"]
PLAN_SOURCES: Registry[PlanSource] = Registry("stage plan source")


def example_input(net: nn.Module, input_size: int | None = None) -> Tensor:
    """A one-image input for probing shapes, on the backbone's device and dtype: ``input_size`` (default: the
    model's ``default_input_size`` or timm's ``pretrained_cfg``, else 224) and its first convolution's channels."""
    if input_size is None:
        cfg = getattr(net, "pretrained_cfg", None) or {}
        input_size = getattr(net, "default_input_size", None) or (cfg.get("input_size") or (3, 224))[-1]
    conv = next((m for m in net.modules() if isinstance(m, nn.Conv2d)), None)
    channels = conv.in_channels if conv is not None else 3
    ref = next(net.parameters(), None)
    device, dtype = (ref.device, ref.dtype) if ref is not None else (torch.device("cpu"), torch.float32)
    return torch.randn(
        1, channels, input_size, input_size, device=device, dtype=dtype if dtype.is_floating_point else None
    )


def stage_plan(net: nn.Module, stages: Sequence[str] | None = None, input_size: int | None = None) -> StagePlan:
    """The stage plan of ``net``: from ``stages`` (module paths ending each stage) when given, else from the first
    plan source that knows the model (see the module docstring).

    Example:
        >>> plan = stage_plan(torchvision.models.mobilenet_v2())
        >>> [(s.name, s.channels, s.reduction) for s in plan.stages]
    """
    try:
        if not any(isinstance(m, nn.Conv2d) for m in net.modules()):
            raise SplitError(f"it has no 2-D convolution (dhm branches CNNs); {trace.HOW_TO}")
        example = example_input(net, input_size)
        if stages:
            plan = traced_plan(net, example, list(stages), source="explicit")
            necks = [m for m in net.modules() if isinstance(m, BNNeck)]
            return replace(plan, num_classes=necks[-1].out_features) if necks else plan
        for name in sorted(PLAN_SOURCES, key=lambda n: PLAN_SOURCES.meta(n).get("priority", 50)):
            plan = PLAN_SOURCES.get(name)(net, example)
            if plan is not None:
                necks = [m for m in net.modules() if isinstance(m, BNNeck)]  # probed in eval mode: embeddings
                return replace(plan, num_classes=necks[-1].out_features) if necks else plan
        raise SplitError(f"no plan source accepted it; {trace.HOW_TO}")
    except SplitError as exc:
        raise SplitError(f"dhm does not know how to split a {type(net).__name__} into stages: {exc}") from None


def traced_plan(
    net: nn.Module,
    example: Tensor,
    stage_paths: list[str] | None,
    source: str,
    copy_stage: StageCopier | None = None,
    copy_head: HeadCopier | None = None,
) -> StagePlan:
    """A plan cut from ``net``'s traced forward (at ``stage_paths``, or where the resolution drops). Branch stages
    and heads are re-initialised copies of the backbone's own parts unless ``copy_stage``/``copy_head`` are given."""
    found = trace.split(net, example, stage_paths)
    stem, runs, head = trace_parts.parts(net, found)
    hw = found.input_hw
    bounds = [found.stem_end, *found.stage_ends]
    stage_list = []
    for i, (end, run) in enumerate(zip(found.stage_ends, runs)):
        calls = trace_parts.stage_calls(found, i)
        shape = found.shapes[end]
        single = len(calls) == 1 and _is_single_call(found, i)
        sequential = (
            calls[0].target if single and isinstance(net.get_submodule(calls[0].target), nn.Sequential) else None
        )
        name = stage_paths[i] if stage_paths else (calls[-1].target if calls else end)
        blocks = len(net.get_submodule(sequential)) if sequential else len(calls)
        stage_list.append(Stage(name, shape[1], max(1, round(hw / shape[-1])), blocks, run, sequential))
    logits = found.shapes.get(_output_name(found))
    num_classes = logits[-1] if logits else 0

    def replica_stage(backbone: nn.Module, index: int, blocks: int, width: float, in_channels: int):
        if width != 1.0:
            raise ValueError(
                f"branch width {width} needs a stage builder, which only dhm's own model families have; "
                f"{type(backbone).__name__} branches copy its stages at width 1"
            )
        total = stage_list[index].blocks
        if not 1 <= blocks <= total:
            raise ValueError(f"stage {stage_list[index].name!r} has {total} module calls; depths must be 1..{total}")
        path = stage_list[index].sequential
        if path is not None:  # one nn.Sequential: copy its first blocks (block-wise, for the stochastic fork point)
            stage = copy.deepcopy(backbone.get_submodule(path))[:blocks]
            trace_parts.reset(stage)
        else:
            kept = trace_parts.stage_calls(found, index)[blocks - 1]
            channels = found.shapes.get(kept.name, (0, 0))[1]
            if channels != stage_list[index].channels:
                raise ValueError(
                    f"the first {blocks} module calls of stage {stage_list[index].name!r} end at {channels} channels, "
                    f"not the stage's {stage_list[index].channels}; choose other depths"
                )
            stage = trace_parts.copy_part(
                backbone, found, bounds[index], bounds[index + 1], None if blocks == total else blocks
            )
        return stage, stage_list[index].channels

    def replica_head(backbone: nn.Module, in_channels: int, classes: int) -> nn.Module:
        return _with_classes(trace_parts.copy_part(backbone, found, found.stage_ends[-1], None), num_classes, classes)

    return StagePlan(
        stem=stem,
        stages=tuple(stage_list),
        head=head,
        num_classes=num_classes,
        source=source,
        copy_stage=copy_stage or replica_stage,
        copy_head=copy_head or replica_head,
        widths=copy_stage is not None,
    )


def _is_single_call(found: trace.TracedSplit, index: int) -> bool:
    graph = found.graphs[False]
    bounds = [found.stem_end, *found.stage_ends]
    sub = trace.part_graph(graph, trace._node(graph, bounds[index]), trace._node(graph, bounds[index + 1]))
    return sum(1 for n in sub.nodes if n.op not in ("placeholder", "output")) == 1


def _output_name(found: trace.TracedSplit) -> str:
    output = next(n for n in found.graphs[False].nodes if n.op == "output")
    value = output.args[0]
    return value.name if isinstance(value, torch.fx.Node) else ""


def _with_classes(head: nn.Module, have: int, want: int) -> nn.Module:
    """``head`` predicting ``want`` classes: its last ``nn.Linear`` replaced when ``have`` differs."""
    if want == have:
        return head

    def resized(old: nn.Linear) -> nn.Module:
        return nn.Linear(old.in_features, want, bias=old.bias is not None, device=old.weight.device)

    return replace_last_linear(head, resized, f"resize from {have} to {want} classes")


@PLAN_SOURCES.register("timm", priority=30)
def timm_plan(net: nn.Module, example: Tensor) -> StagePlan | None:
    """timm models: stages end at their ``feature_info`` modules; the entries at reduction <= 2 are the stem."""
    info = getattr(net, "feature_info", None)
    if not isinstance(info, (list, tuple)) or not info or not all(isinstance(i, dict) and "module" in i for i in info):
        return None
    paths = [i["module"] for i in info if i.get("reduction", 4) > 2]
    return traced_plan(net, example, paths, source="timm") if len(paths) >= 2 else None


@PLAN_SOURCES.register("fx", priority=90)
def fx_plan(net: nn.Module, example: Tensor) -> StagePlan:
    """Any model torch.fx can trace: stages end where the resolution drops next."""
    return traced_plan(net, example, None, source="fx")
