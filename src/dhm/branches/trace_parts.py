"""The parts of a traced split as functions and fresh copies: the stem, stage and head functions of a plan from
``torch.fx`` (:mod:`dhm.branches.trace`), the module calls of a stage, and re-initialised replicas of a part for
a branch."""

from __future__ import annotations

import copy
import itertools

from torch import fx, nn

from .trace import ModePart, PartFn, TracedSplit, _node, part_fn, part_graph, part_module


def parts(net: nn.Module, found: TracedSplit) -> tuple[PartFn, list[PartFn], PartFn]:
    """Stem, stage and head functions for both modes."""
    bounds = [found.stem_end, *found.stage_ends]

    def fns(start: str | None, end: str | None) -> PartFn:
        made = {}
        for mode, graph in found.graphs.items():
            a = _node(graph, start) if start else None
            b = _node(graph, end) if end else None
            made[mode] = part_fn(net, part_graph(graph, a, b))
        return ModePart(made[True], made[False])

    stem = fns(None, found.stem_end)
    stages = [fns(a, b) for a, b in itertools.pairwise(bounds)]
    return stem, stages, fns(found.stage_ends[-1], None)


def stage_calls(found: TracedSplit, index: int) -> list[fx.Node]:
    """The module calls of stage ``index`` (eval-mode trace), in order."""
    graph = found.graphs[False]
    bounds = [found.stem_end, *found.stage_ends]
    sub = part_graph(graph, _node(graph, bounds[index]), _node(graph, bounds[index + 1]))
    return [n for n in sub.nodes if n.op == "call_module"]


def copy_part(net: nn.Module, found: TracedSplit, start: str, end: str | None, keep: int | None = None) -> nn.Module:
    """A fresh module computing the part after ``start`` up to ``end`` (None: the head) on copies of the modules it
    calls, every parameter re-initialised (``reset_parameters``); ``keep`` keeps only its first module calls."""
    graph = found.graphs[True]  # the replica is trained: the train-mode flow
    sub = part_graph(graph, _node(graph, start), _node(graph, end) if end else None)
    if keep is not None:
        calls = [n for n in sub.nodes if n.op == "call_module"]
        last = calls[keep - 1]
        output = next(n for n in sub.nodes if n.op == "output")
        output.args = (last,)
        for node in reversed(list(sub.nodes)):
            if node.op != "output" and not node.users and node is not last:
                sub.erase_node(node)
        sub.lint()
    replica = copy.deepcopy(part_module(net, sub))
    replica.delete_all_unused_submodules()
    reset(replica)
    return replica


def reset(module: nn.Module) -> None:
    """Re-initialise every submodule that can (``reset_parameters``; BatchNorm also clears its running stats)."""
    for m in module.modules():
        if callable(getattr(m, "reset_parameters", None)):
            m.reset_parameters()
