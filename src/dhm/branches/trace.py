"""Split any traceable CNN into stem -> stages -> head with ``torch.fx``, without changing the model.

Only the model's top-level flow (its *spine*) is traced: every submodule is a leaf except plain ``nn.Sequential``
containers (whose forward just chains their children) and the ancestors of the stage modules asked for. The
graph is cut at *single-value points*: nodes after which nothing computed earlier is used again, so the stage
outputs are the only values flowing on. Each part (stem, every stage, head) becomes a function
``part(backbone, x)`` that runs the backbone's own modules, so parameters keep their names and live in one place.

Stages come either from module paths (given by hand, or from timm's ``feature_info``) or, by default, from the
spatial reduction of the single-value points on an example input: a stage ends where the resolution drops next.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from ..errors import first_line

PartFn = Callable[[nn.Module, Tensor], Tensor]

HOW_TO = (
    "pass the stages by hand: dhm.attach_branches(net, specs, stages=['layer1', 'layer2', ...]) with the module "
    "paths whose outputs end each stage (dhm inspect MODEL lists the model's modules), or subclass "
    "dhm.StagedBackbone"
)


class SplitError(TypeError):
    """The model cannot be split into stages this way; the message says how to pass the stages by hand."""


class _SpineTracer(fx.Tracer):
    """Traces through the root, plain ``nn.Sequential`` containers and the ancestors of ``leaves``; every other
    submodule (and every path in ``leaves``) is one call."""

    def __init__(self, leaves: Sequence[str]) -> None:
        super().__init__()
        self.leaves = set(leaves)
        self.ancestors = {p.rsplit(".", i)[0] for p in self.leaves for i in range(1, p.count(".") + 1)}

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if qualname in self.leaves:
            return True
        if qualname in self.ancestors:
            return False
        return type(m).forward is not nn.Sequential.forward


def trace_spine(net: nn.Module, leaves: Sequence[str] = (), training: bool = True) -> fx.Graph:
    """The spine graph of ``net`` as traced in train (or eval) mode; the mode is restored afterwards."""
    was = net.training
    net.train(training)
    try:
        return _SpineTracer(leaves).trace(net)
    except Exception as exc:
        raise SplitError(
            f"torch.fx cannot trace {type(net).__name__}'s forward ({type(exc).__name__}: {first_line(exc)}); {HOW_TO}"
        ) from exc
    finally:
        net.train(was)


def _value_nodes(graph: fx.Graph) -> list[fx.Node]:
    return [n for n in graph.nodes if n.op != "get_attr"]


def cut_points(graph: fx.Graph) -> list[fx.Node]:
    """Nodes after which no earlier value is used again (the input placeholder included), in graph order."""
    nodes = _value_nodes(graph)
    placeholders = [n for n in nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        raise SplitError(f"the model's forward takes {len(placeholders)} inputs; dhm branches single-input models")
    pos = {n: i for i, n in enumerate(nodes)}
    cuts, reach = [], -1
    for i, node in enumerate(nodes):
        if node.op == "output":
            break
        if reach <= i:
            cuts.append(node)
        reach = max(reach, max((pos[u] for u in node.users if u in pos), default=i))
    return cuts


def part_graph(graph: fx.Graph, start: fx.Node | None, end: fx.Node | None) -> fx.Graph:
    """The sub-graph after ``start`` (None: from the input) up to and including ``end`` (None: to the output),
    with one input ``x`` standing for ``start``'s value."""
    part = fx.Graph()
    x = part.placeholder("x")
    env: dict[fx.Node, fx.Node] = {}

    def lookup(node: fx.Node) -> fx.Node:
        if node not in env:
            if node.op != "get_attr":
                raise SplitError(f"value {node.name} crosses a stage boundary; {HOW_TO}")
            env[node] = part.get_attr(node.target)
        return env[node]

    inside = start is None
    for node in graph.nodes:
        if node.op == "placeholder":
            env[node], inside = x, inside or node is start
            if node is end:  # an empty part: the identity
                part.output(x)
                break
            continue
        if not inside:
            if node is start:
                env[node], inside = x, True
            continue
        if node.op == "output":
            part.output(fx.map_arg(node.args[0], lookup))
            break
        env[node] = part.node_copy(node, lookup)
        if node is end:
            part.output(env[node])
            break
    return part


def part_module(net: nn.Module, graph: fx.Graph) -> fx.GraphModule:
    """A GraphModule running ``graph`` on ``net``'s own submodules (shared, not copied)."""
    return fx.GraphModule(net, graph, class_name="Part")


def part_fn(net: nn.Module, graph: fx.Graph) -> PartFn:
    """``graph`` as a plain function ``f(backbone, x)``: it reads the backbone's modules at call time, so it follows
    the backbone through ``.to()``, ``copy.deepcopy`` and DDP, and registers nothing."""
    return type(part_module(net, graph)).forward


class ModePart:
    """A part traced twice, in train and in eval mode (python branches on ``self.training`` are frozen by tracing);
    calls the one that matches the backbone's mode."""

    def __init__(self, train: PartFn, eval: PartFn) -> None:
        self.train, self.eval = train, eval

    def __call__(self, root: nn.Module, x: Tensor) -> Tensor:
        return (self.train if root.training else self.eval)(root, x)


@dataclass(frozen=True)
class TracedSplit:
    """The boundaries found on both traces: ``stem_end`` and one node name per stage end."""

    graphs: dict[bool, fx.Graph]  # training flag -> spine graph
    stem_end: str
    stage_ends: tuple[str, ...]
    shapes: dict[str, tuple[int, ...]]  # node name -> output shape on the example input (eval graph)
    input_hw: int


def _node(graph: fx.Graph, name: str) -> fx.Node:
    for node in graph.nodes:
        if node.name == name:
            return node
    raise SplitError(f"the train-mode and eval-mode traces differ at {name!r}; {HOW_TO}")


def _shapes(net: nn.Module, graph: fx.Graph, example: Tensor) -> dict[str, tuple[int, ...]]:
    was = net.training
    net.eval()
    try:
        with torch.no_grad():
            ShapeProp(part_module(net, graph)).propagate(example)
    except Exception as exc:
        raise SplitError(
            f"{type(net).__name__} did not run on a {tuple(example.shape)} example input ({type(exc).__name__}); "
            "give attach_branches an input_size the model accepts"
        ) from exc
    finally:
        net.train(was)
    out = {}
    for node in graph.nodes:
        meta = node.meta.get("tensor_meta")
        if meta is not None and hasattr(meta, "shape"):
            out[node.name] = tuple(meta.shape)
    return out


def split(net: nn.Module, example: Tensor, stage_paths: Sequence[str] | None = None) -> TracedSplit:
    """Trace ``net`` and find its stem end and stage ends: at ``stage_paths`` (module calls) when given, else at
    the last single-value point of every spatial resolution below 1/2 of the input's (the stem keeps 1/1 and 1/2)."""
    leaves = list(stage_paths or ())
    graphs = {mode: trace_spine(net, leaves, mode) for mode in (False, True)}
    shapes = _shapes(net, graphs[False], example)
    cuts = cut_points(graphs[False])
    hw = example.shape[-1]
    if stage_paths:
        ends = []
        for path in stage_paths:
            calls = [n for n in graphs[False].nodes if n.op == "call_module" and n.target == path]
            if len(calls) != 1:
                known = [n.target for n in graphs[False].nodes if n.op == "call_module"]
                raise SplitError(
                    f"stage {path!r} is called {len(calls)} times in {type(net).__name__}'s forward, not once "
                    f"(modules called: {', '.join(known[:40])})"
                )
            if calls[0] not in cuts:
                raise SplitError(
                    f"a value computed before stage {path!r} is used after it (a skip across it); {HOW_TO}"
                )
            ends.append(calls[0])
        before = [c for c in cuts if _index(graphs[False], c) < _index(graphs[False], ends[0])]
        stem_end = before[-1]
    else:
        stem_end, ends = _levels(net, cuts, shapes, hw)
    train_cuts = {c.name for c in cut_points(graphs[True])}  # the same boundaries must hold in train mode
    missing = [n for n in [stem_end.name, *(e.name for e in ends)] if n not in train_cuts]
    if missing:
        raise SplitError(f"the train-mode trace of {type(net).__name__} differs at {missing[0]!r}; {HOW_TO}")
    if any(len(shapes.get(e.name, ())) != 4 for e in ends):
        raise SplitError(f"every stage must output a 4-D feature map; {HOW_TO}")
    return TracedSplit(graphs, stem_end.name, tuple(e.name for e in ends), shapes, hw)


def _index(graph: fx.Graph, node: fx.Node) -> int:
    return list(graph.nodes).index(node)


def _levels(
    net: nn.Module, cuts: list[fx.Node], shapes: dict[str, tuple[int, ...]], hw: int
) -> tuple[fx.Node, list[fx.Node]]:
    """Stem end and stage ends from the spatial reduction at the single-value points: consecutive points at one
    reduction form a level; levels at reduction <= 2 are the stem; a level with no parameters joins the one before."""
    by_level: list[tuple[int, list[fx.Node]]] = []  # every level, the input's resolution included
    for node in cuts[1:]:
        shape = shapes.get(node.name)
        if shape is None:
            continue
        if len(shape) != 4 or shape[-1] <= 1:
            break  # pooled or flattened: the head starts here
        reduction = max(1, round(hw / shape[-1]))
        if by_level and reduction < by_level[-1][0]:
            break  # the grid grows again (an adaptive pool to a larger grid): head
        if by_level and by_level[-1][0] == reduction:
            by_level[-1][1].append(node)
        else:
            by_level.append((reduction, [node]))
    # ImageNet-style: the levels at reduction <= 2 are the stem.
    stem = [n for r, nodes in by_level if r <= 2 for n in nodes]
    stem_end = stem[-1] if stem else cuts[0]
    stages = _merge_parameterless(net, [nodes for r, nodes in by_level if r > 2])
    if len(stages) < 2 and by_level:
        # CIFAR-style (stem, stage1 at the input's resolution, then drops): the first level's first top-level
        # module is the stem, the rest of that level the first stage.
        first = by_level[0][1]
        owner = [_top_module(n) for n in first]
        stem_nodes = [n for n, o in zip(first, owner) if o == owner[0]] if owner[0] is not None else []
        rest = first[len(stem_nodes) :]
        levels = ([rest] if rest else []) + [nodes for _, nodes in by_level[1:]]
        named = _merge_parameterless(net, levels)
        if len(named) >= 2 and stem_nodes:
            stem_end, stages = stem_nodes[-1], named
    if len(stages) < 2:
        raise SplitError(
            f"found {len(stages)} stage(s) in {type(net).__name__} by resolution, too few to branch; {HOW_TO}"
        )
    return stem_end, [s[-1] for s in stages]


def _top_module(node: fx.Node) -> str | None:
    """The top-level child of the traced model that ``node`` calls (None for a function or method call)."""
    return str(node.target).split(".")[0] if node.op == "call_module" else None


def _merge_parameterless(net: nn.Module, levels: list[list[fx.Node]]) -> list[list[fx.Node]]:
    """Levels as stages; a level without parameters (a pooling) joins the stage before it."""
    stages: list[list[fx.Node]] = []
    for nodes in levels:
        has_params = any(
            n.op == "call_module" and any(True for _ in net.get_submodule(n.target).parameters()) for n in nodes
        )
        if stages and not has_params:
            stages[-1].extend(nodes)
        else:
            stages.append(list(nodes))
    return stages
