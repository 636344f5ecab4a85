"""DHMModel: a backbone plus side branches as one module; attach and strip."""

from __future__ import annotations

import collections
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn

from .builders import BRANCH_BUILDERS
from .extras import EXTRAS
from .neck import match_neck
from .plan import StagePlan, stage_plan
from .spec import BranchSpec


class HeadOutputs(NamedTuple):
    """A train-mode output with features: ``logits`` and ``features``, each a named tuple over the heads, and the
    named outputs of the layout's extras (:mod:`dhm.branches.extras`; OKDDip's ``attention``)."""

    logits: tuple[Tensor, ...]
    features: tuple[Tensor, ...]
    extras: dict[str, Tensor] = {}  # noqa: RUF012 - a NamedTuple default, never mutated

    @property
    def attention(self) -> Tensor | None:
        """OKDDip's attention weights (B, m, m) of the peers over each other, when the layout has them."""
        return self.extras.get("attention")


def head_logits(outputs: object) -> tuple[Tensor, ...]:
    """The logits per head of a train-mode output: ``HeadOutputs``, a tuple of logits, or one tensor."""
    if isinstance(outputs, HeadOutputs):
        return tuple(outputs.logits)
    return tuple(outputs) if isinstance(outputs, (tuple, list)) else (outputs,)


class DHMModel(nn.Module):
    """Backbone + side branches. The backbone module is kept as is, so its parameter names never change.

    * train mode: ``forward`` returns the logits of every head, main first, as a named tuple whose fields are
      ``head_names`` (``out.main``, ``out.head1``, ...; ``out[0]`` is the main head); with ``features=True`` (a
      method that reads features asks for it) it returns ``HeadOutputs(logits, features)``, two such tuples:
      the logits and each head's pooled feature (its classifier's input map, averaged over space, (B, C));
    * eval mode: ``forward`` returns the main logits only (the post-BN embedding for a backbone with a
      :class:`~dhm.branches.neck.BNNeck`) and does not run the branches;
    * ``forward_heads`` evaluates every head on demand, in either mode.

    Example:
        >>> model = dhm.attach_branches(backbone, [dhm.BranchSpec("layer2", width=2.0)])
        >>> logits_per_head = model(images)        # train mode: (main, head1)
        >>> plain = dhm.strip(model)                # the original backbone
    """

    def __init__(
        self,
        backbone: nn.Module,
        specs: Sequence[BranchSpec],
        num_classes: int | None = None,
        dynamic_fork: bool = False,
        plan: StagePlan | None = None,
        features: bool = False,
        gate: bool = False,
        attention: bool = False,
        extras: Sequence[str] = (),
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.plan = plan if plan is not None else stage_plan(backbone)  # data, not a module: registers nothing
        num_classes = num_classes if num_classes is not None else self.plan.num_classes
        self.specs = tuple(specs)
        self.fork_stages = tuple(self.plan.index(s.fork) for s in self.specs)
        self.branches = nn.ModuleDict(
            {
                f"head{k + 1}": BRANCH_BUILDERS.get(spec.builder)(self.plan, backbone, spec, num_classes)
                for k, spec in enumerate(self.specs)
            }
        )
        for branch in self.branches.values():  # a backbone with a BNNeck gives every branch head one (re-ID)
            branch.head = match_neck(backbone, branch.head)
        self.dynamic_fork = dynamic_fork
        self.features = features
        # The layout's extras (ONE's gate, OKDDip's attention), run after the heads; each is an attribute of its
        # name (``model.gate``), dropped at deployment like the branches.
        names = [*extras, *(["gate"] if gate else []), *(["attention"] if attention else [])]
        self.extras: tuple[str, ...] = tuple(dict.fromkeys(names)) if self.specs else ()
        for name in self.extras:
            self._modules[name] = EXTRAS.get(name)(self.plan, self.fork_stages, 1 + len(self.specs))  # model.<name>
            self.features = self.features or getattr(self, name).features
        # The train-mode output: a tuple of logits whose fields name the heads (main first), so a loss can never
        # pair logits with the wrong names.
        self.output_type = collections.namedtuple("DHMOutput", self.head_names)
        ref = next(backbone.parameters(), None)
        if ref is not None:  # branches and extras follow the backbone's device and dtype
            self.branches.to(device=ref.device, dtype=ref.dtype)
            for name in self.extras:
                getattr(self, name).to(device=ref.device, dtype=ref.dtype)

    @property
    def head_names(self) -> tuple[str, ...]:
        """``("main", "head1", ...)``, then the heads the extras add (``gate``), in the order of the outputs."""
        added = [head for name in getattr(self, "extras", ()) for head in getattr(self, name).heads]
        return ("main", *self.branches.keys(), *added)

    @property
    def gate(self) -> nn.Module | None:
        """ONE's gate, when the layout has it."""
        return self._modules.get("gate")

    @property
    def attention(self) -> nn.Module | None:
        """OKDDip's attention, when the layout has it."""
        return self._modules.get("attention")

    def forward(self, x: Tensor) -> tuple[Tensor, ...] | Tensor:
        if not self.training:
            return self.backbone(x)
        return self.forward_heads(x, dynamic=self.dynamic_fork, features=self.features)

    def forward_heads(self, x: Tensor, dynamic: bool = False, features: bool = False) -> tuple:
        """Logits of every head, main first; with ``features`` also each head's pooled feature
        (``HeadOutputs``). ``dynamic`` draws a stochastic fork offset per branch (docs/method.md 4.2)."""
        plan, root = self.plan, self.backbone
        branches = list(self.branches.values())
        # Stages whose per-block outputs a dynamically forking branch may take over.
        blockwise = {s + 1 for s, b in zip(self.fork_stages, branches) if dynamic and b.max_offset > 0}
        fork_feats: dict[int, Tensor] = {-1: x}  # -1: the input, which a peer branch (DML) reads
        block_feats: dict[int, list[Tensor]] = {}
        h = plan.stem(root, x)
        for index, stage in enumerate(plan.stages):
            if index in blockwise:
                feats = [h]
                for block in root.get_submodule(stage.sequential):
                    h = block(h)
                    feats.append(h)
                block_feats[index] = feats
            else:
                h = stage.run(root, h)
            fork_feats[index] = h
        logits, pooled = [plan.head(root, h)], [h.mean((2, 3))] if features else []
        for stage_index, branch in zip(self.fork_stages, branches):
            feats = fork_feats[stage_index]
            if stage_index + 1 in blockwise:
                offset = torch.randint(0, branch.max_offset + 1, (), device=x.device)
                out = branch(feats, block_feats[stage_index + 1], offset, features=features)
            else:
                out = branch(feats, features=features)
            logits.append(out[0] if features else out)
            if features:
                pooled.append(out[1])
        outputs: dict[str, Tensor] = {}
        for name in self.extras:
            extra = getattr(self, name)
            if extra.features and not features:  # what it reads is not computed: its outputs are not asked for
                continue
            for key, value in extra(fork_feats, logits, pooled).items():
                if key in extra.heads:
                    logits.append(value)
                else:
                    outputs[key] = value
        if features:
            return HeadOutputs(self.output_type(*logits), self.output_type(*pooled), outputs)
        return self.output_type(*logits)


def attach_branches(
    backbone: nn.Module,
    specs: Sequence[BranchSpec | dict],
    num_classes: int | None = None,
    dynamic_fork: bool = False,
    stages: Sequence[str] | None = None,
    input_size: int | None = None,
    plan: StagePlan | None = None,
    features: bool = False,
    gate: bool = False,
    attention: bool = False,
    extras: Sequence[str] = (),
) -> DHMModel:
    """Put side branches on a plain CNN: dhm's own models, torchvision and timm models, or your own.

    Args:
        backbone: the plain network; it is kept, not copied, and its parameter names do not change.
        specs: one :class:`BranchSpec` (or a dict of its fields) per branch; forks count the plan's stages.
        num_classes: classes of the branch heads; default: the backbone's.
        dynamic_fork: draw a stochastic fork point per step in train mode (docs/method.md 4.2).
        stages: module paths whose outputs end each stage, to split the model by hand (default: found, see
            :func:`dhm.branches.plan.stage_plan`).
        input_size: side of the square example input used to measure channels and reductions (default: the
            model's own, else 224).
        plan: a plan already made for this backbone by :func:`dhm.stage_plan` (then ``stages`` and ``input_size``
            are not used).
        features: the train-mode output also carries each head's pooled feature (``HeadOutputs``).
        gate: add ONE's gate over the heads; its gated ensemble is one more output, the head ``gate``.
        attention: add OKDDip's attention over the branches (peers); the output carries its weights.
        extras: modules of :data:`dhm.branches.extras.EXTRAS` by name (``gate`` and ``attention`` are two).

    Example:
        >>> model = dhm.attach_branches(torchvision.models.mobilenet_v2(), [
        ...     dhm.BranchSpec(fork=1), dhm.BranchSpec(fork=2, builder="light")], num_classes=10)
    """
    specs = [s if isinstance(s, BranchSpec) else BranchSpec(**s) for s in specs]
    plan = plan if plan is not None else stage_plan(backbone, stages, input_size)
    return DHMModel(backbone, specs, num_classes, dynamic_fork, plan, features, gate, attention, extras)


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside DDP (``.module``) and ``torch.compile`` (``._orig_mod``) wrappers."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        else:
            return model


def strip(model: nn.Module) -> nn.Module:
    """The plain backbone of a branched model (the very module, not a copy); a plain model is returned unchanged.

    Example:
        >>> deployable = dhm.strip(model)   # loads into create_model(name, branches="none") strictly
    """
    inner = unwrap(model)
    return inner.backbone if isinstance(inner, DHMModel) else model
