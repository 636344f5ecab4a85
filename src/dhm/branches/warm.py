"""Branches that start from pretrained weights (``model.pretrained`` with ``model.pretrained_branches=copy``, the
default): every replicated stage of a branch is initialised from the backbone stage it copies, once the file's
weights are in the backbone, and a DML peer (a whole network) takes every tensor the backbone took from the file.
``random`` keeps the branches as built, the paper's from-scratch setting. Only what came from the file is copied
(a classifier of other classes stays as initialised, so peers never start identical), and only into tensors of the
same name and shape: a shallower copy of a stage takes its first blocks, a wider one keeps its initialisation."""

from __future__ import annotations

from collections.abc import Collection

import torch
from torch import nn

from .model import DHMModel


def _copy(source: dict[str, torch.Tensor], target: nn.Module) -> int:
    """Copy the tensors of ``source`` into ``target``'s of the same name and shape; how many it copied."""
    own = target.state_dict()
    take = {k: v for k, v in source.items() if k in own and own[k].shape == v.shape}
    with torch.no_grad():
        for key, value in take.items():
            own[key].copy_(value)
    return len(take)


def seed_branches(model: nn.Module, loaded: Collection[str]) -> list[str]:
    """Initialise ``model``'s branch stages (and DML peers) from the backbone's tensors named in ``loaded`` (the
    backbone's keys a pretrained file filled); returns what it did per branch stage, as ``head1.stages.0 <- layer3
    (12 tensors)`` or ``... kept as initialised (...)`` lines (empty for a plain model)."""
    if not isinstance(model, DHMModel):
        return []
    plan, copied = model.plan, []
    state = {k: v for k, v in model.backbone.state_dict().items() if k in set(loaded)}
    for (name, branch), fork in zip(model.branches.items(), model.fork_stages):
        if fork == -1:  # a peer: the whole network
            count = _copy(state, branch.stages[0].net)
            if count:
                copied.append(f"{name} <- backbone ({count} tensors)")
            continue
        for offset, stage in enumerate(branch.stages):
            index = fork + 1 + offset
            path = plan.stages[index].sequential if index < len(plan.stages) else None
            if path is None:
                break
            prefix = path + "."
            part = {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
            own = stage.state_dict()
            if own.keys() <= part.keys() and all(own[k].shape == part[k].shape for k in own):
                copied.append(f"{name}.stages.{offset} <- {path} ({_copy(part, stage)} tensors)")
            else:
                copied.append(f"{name}.stages.{offset} kept as initialised (not the shapes of {path})")
    return copied
