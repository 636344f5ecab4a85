"""Training orders, registered by name (``SAMPLERS``, ``data.sampler``): how an epoch's global batches are drawn.

A sampler returns the epoch's indices, global batch after global batch; the batch plan
(:class:`~dhm.data.plan.BatchPlan`) cuts each global batch into the micro-batches of the processes and
accumulation steps. A sampler whose ``group`` is larger than 1 lays out consecutive runs of ``group`` samples
that belong together (the K images of one identity); the plan keeps every run on one process, so a loss that
pairs samples inside a group (batch-hard triplets) sees them whatever the process count.

* ``random``: a seeded permutation of the split (the last partial batch dropped), drawn on the training device.
* ``identity``: P identities x K images (``data.sampler_options.instances`` = K, P = batch / K), as the re-ID recipes draw them:
  each pass shuffles every identity's images into groups of K (an identity with fewer than K images is topped up
  by drawing with replacement), then fills batches with groups of P distinct identities picked at random among
  those with groups left; a new pass starts when fewer than P are left. An epoch has (groups of one pass) / P
  steps, the same every epoch.
* ``class_pairs``: CS-KD's (anchor, partner) pairs of one class, interleaved; see :class:`ClassPairs`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from ..errors import ConfigError, DataError
from ..options import SAMPLERS as OPTIONS
from ..registry import Registry


def permutation(size: int, generator: torch.Generator) -> Tensor:
    """A random permutation drawn on the generator's device: a stable sort of random 62-bit keys (CUDA's
    ``randperm`` draws small permutations on the host and copies them over, a synchronising copy)."""
    keys = torch.randint(1 << 62, (size,), generator=generator, device=generator.device)
    return torch.argsort(keys, stable=True)


class Sampler:
    """A training order. ``group``: consecutive samples that stay on one process; ``steps(batch_size)``: optimizer
    steps per epoch; ``draw(steps, batch_size, generator, seed)``: the epoch's ``steps * batch_size`` indices.
    ``generator`` is the epoch's stream on the training device (the augmentation parameters are drawn from it
    next); ``seed`` seeds a host-side draw instead (copied to the device once, when the epoch starts)."""

    group: int = 1

    def steps(self, batch_size: int) -> int:
        raise NotImplementedError

    def draw(self, steps: int, batch_size: int, generator: torch.Generator, seed: int) -> Tensor:
        raise NotImplementedError


SamplerFactory = Callable[..., Sampler]  # (labels, **options) -> Sampler
SAMPLERS: Registry[SamplerFactory] = Registry("sampler")


@SAMPLERS.register("random")
class RandomOrder(Sampler):
    """Every sample once per epoch in a seeded random order; the last partial batch is dropped."""

    def __init__(self, labels: Tensor, **_: object) -> None:
        self.size = len(labels)

    def steps(self, batch_size: int) -> int:
        return self.size // batch_size

    def draw(self, steps, batch_size, generator, seed):
        return permutation(self.size, generator)[: steps * batch_size]


@dataclass
class IdentityOptions:
    """``data.sampler_options.*`` of ``identity`` (``pk``)."""

    instances: int = 4  # K images per identity in a batch (P = data.batch_size / K)

    def __post_init__(self) -> None:
        if self.instances < 1:
            raise ConfigError(f"data.sampler_options.instances must be >= 1, got {self.instances!r}")


@SAMPLERS.register("identity")
class IdentityOrder(Sampler):
    """P identities x K images per batch (``instances`` = K); see the module docstring."""

    def __init__(self, labels: Tensor, instances: int = 4, **_: object) -> None:
        if instances < 1:
            raise DataError(f"data.sampler_options.instances={instances} must be at least 1")
        self.group = instances
        labels = labels.cpu()
        self.members = [torch.nonzero(labels == c).flatten() for c in torch.unique(labels).tolist()]
        self.groups = sum(max(1, len(m) // instances) for m in self.members)

    def steps(self, batch_size: int) -> int:
        if batch_size % self.group:
            raise DataError(
                f"data.batch_size={batch_size} must be a multiple of data.sampler_options.instances={self.group}"
            )
        per_batch = batch_size // self.group
        if per_batch > len(self.members):
            raise DataError(
                f"data.batch_size={batch_size} with data.sampler_options.instances={self.group} takes {per_batch} "
                "identities per "
                f"batch; the training split has {len(self.members)}"
            )
        return self.groups // per_batch

    def draw(self, steps, batch_size, generator, seed):
        g = torch.Generator().manual_seed(seed)
        per_batch, k = batch_size // self.group, self.group
        batches: list[Tensor] = []
        while len(batches) < steps:
            batches.extend(self._one_pass(per_batch, k, g)[: steps - len(batches)])
        return torch.cat(batches).to(generator.device)

    def _one_pass(self, per_batch: int, k: int, g: torch.Generator) -> list[Tensor]:
        pools: list[list[Tensor]] = []
        for members in self.members:
            shuffled = members[torch.randperm(len(members), generator=g)]
            if len(shuffled) < k:
                shuffled = torch.cat(
                    [shuffled, members[torch.randint(len(members), (k - len(shuffled),), generator=g)]]
                )
            pools.append(list(shuffled[: len(shuffled) // k * k].view(-1, k).unbind()))
        alive = [i for i, pool in enumerate(pools) if pool]
        batches = []
        while len(alive) >= per_batch:
            chosen = [alive[int(j)] for j in torch.randperm(len(alive), generator=g)[:per_batch]]
            batches.append(torch.cat([pools[i].pop() for i in chosen]))
            alive = [i for i in alive if pools[i]]
        return batches


@SAMPLERS.register("class_pairs")
class ClassPairs(Sampler):
    """CS-KD's order: every sample an anchor once per epoch (seeded random order), each followed by a partner drawn
    at random among the other samples of its class; ``data.batch_size`` counts both (batch/2 anchors per step).
    Pairs stay on one process (``group`` 2)."""

    group = 2

    def __init__(self, labels: Tensor, **_: object) -> None:
        labels = labels.cpu()
        self.labels = labels
        self.members = {c: torch.nonzero(labels == c).flatten() for c in torch.unique(labels).tolist()}
        lonely = [c for c, m in self.members.items() if len(m) < 2]
        if lonely:
            raise DataError(f"class_pairs needs two images of every class; class {lonely[0]} has one")

    def steps(self, batch_size: int) -> int:
        if batch_size % 2:
            raise DataError(f"data.batch_size={batch_size} must be even: anchors and their partners")
        return len(self.labels) // (batch_size // 2)

    def draw(self, steps, batch_size, generator, seed):
        g = torch.Generator().manual_seed(seed)
        anchors = torch.randperm(len(self.labels), generator=g)[: steps * batch_size // 2]
        partners = torch.empty_like(anchors)
        for c, members in self.members.items():
            where = torch.nonzero(self.labels[anchors] == c).flatten()
            pick = torch.randint(len(members) - 1, (len(where),), generator=g)
            own = torch.searchsorted(members, anchors[where])  # the anchor's place among its class
            partners[where] = members[pick + (pick >= own).long()]  # any other member of the class
        return torch.stack([anchors, partners], 1).flatten().to(generator.device)


SAMPLERS.register("pk")(IdentityOrder)  # the name re-ID codebases give it (P identities x K images)
OPTIONS.update(identity=IdentityOptions, pk=IdentityOptions)  # what the config checks data.sampler_options against


def build_sampler(name: str, labels: Tensor, **options: object) -> Sampler:
    """The sampler ``name`` over a split with ``labels`` (``options``: ``instances`` for ``identity``)."""
    return SAMPLERS.get(name)(labels, **options)


def list_samplers(pattern: str = "*") -> list[str]:
    """Registered sampler names."""
    return SAMPLERS.list(pattern)
