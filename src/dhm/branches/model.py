"""DHMModel: a backbone plus side branches as one module; attach and strip."""

from __future__ import annotations

import collections
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .builders import BRANCH_BUILDERS
from .plan import StagePlan, stage_plan
from .spec import BranchSpec


class DHMModel(nn.Module):
    """Backbone + side branches. The backbone module is kept as is, so its parameter names never change.

    * train mode: ``forward`` returns the logits of every head, main first, as a named tuple whose fields are
      ``head_names`` (``out.main``, ``out.head1``, ...; ``out[0]`` is the main head);
    * eval mode: ``forward`` returns the main logits only and does not run the branches;
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
        self.dynamic_fork = dynamic_fork
        # The train-mode output: a tuple of logits whose fields name the heads (main first), so a loss can never
        # pair logits with the wrong names.
        self.output_type = collections.namedtuple("DHMOutput", self.head_names)
        ref = next(backbone.parameters(), None)
        if ref is not None:  # branches follow the backbone's device and dtype
            self.branches.to(device=ref.device, dtype=ref.dtype)

    @property
    def head_names(self) -> tuple[str, ...]:
        """``("main", "head1", ...)``, in the order of the train-mode outputs."""
        return ("main", *self.branches.keys())

    def forward(self, x: Tensor) -> tuple[Tensor, ...] | Tensor:
        if not self.training:
            return self.backbone(x)
        return self.forward_heads(x, dynamic=self.dynamic_fork)

    def forward_heads(self, x: Tensor, dynamic: bool = False) -> tuple[Tensor, ...]:
        """Logits of every head, main first. ``dynamic`` draws a stochastic fork offset per branch (METHOD 4.2)."""
        plan, root = self.plan, self.backbone
        branches = list(self.branches.values())
        # Stages whose per-block outputs a dynamically forking branch may take over.
        blockwise = {s + 1 for s, b in zip(self.fork_stages, branches) if dynamic and b.max_offset > 0}
        fork_feats: dict[int, Tensor] = {}
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
        logits = [plan.head(root, h)]
        for stage_index, branch in zip(self.fork_stages, branches):
            feats = fork_feats[stage_index]
            if stage_index + 1 in blockwise:
                offset = torch.randint(0, branch.max_offset + 1, (), device=x.device)
                logits.append(branch(feats, block_feats[stage_index + 1], offset))
            else:
                logits.append(branch(feats))
        return self.output_type(*logits)


def attach_branches(
    backbone: nn.Module,
    specs: Sequence[BranchSpec | dict],
    num_classes: int | None = None,
    dynamic_fork: bool = False,
    stages: Sequence[str] | None = None,
    input_size: int | None = None,
    plan: StagePlan | None = None,
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

    Example:
        >>> model = dhm.attach_branches(torchvision.models.mobilenet_v2(), [
        ...     dhm.BranchSpec(fork=1), dhm.BranchSpec(fork=2, builder="light")], num_classes=10)
    """
    specs = [s if isinstance(s, BranchSpec) else BranchSpec(**s) for s in specs]
    plan = plan if plan is not None else stage_plan(backbone, stages, input_size)
    return DHMModel(backbone, specs, num_classes=num_classes, dynamic_fork=dynamic_fork, plan=plan)


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
