"""How a validation split is carved from the training split, registered by name (``CARVINGS``, ``data.val_by``;
the default is the task's choice, :attr:`dhm.tasks.Task.carve`).

* ``image``: a seeded random set of images (category recognition: the classes stay, the images differ).
* ``identity``: a seeded random set of whole classes (instance recognition: validation identities are never
  trained on, as the test identities are not). ``data.val_size`` then counts identities.

``data.val_size`` below 1 is a fraction, so it scales with the data; a count (>= 1) is meant for a dataset of
known size and is refused when it would take more than :data:`MAX_COUNT_SHARE` of the training split (a recipe's
count for 50,000 images pointed at a folder of 2,000 would otherwise silently hold out half of it).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..errors import DataError
from ..registry import Registry
from .sources import Source

Carving = Callable[[Source, float, int], "tuple[Source, Source | None]"]  # (train, val_size, seed) -> (train, val)
CARVINGS: Registry[Carving] = Registry("validation carving")


#: the largest share of the training split a count-valued ``data.val_size`` may hold out
MAX_COUNT_SHARE = 0.25


def _count(val_size: float, n: int, unit: str) -> int:
    """How many of the ``n`` training ``unit`` (images, identities) ``val_size`` holds out."""
    if 0 <= val_size < 1:
        return int(round(val_size * n))
    count = int(val_size)
    if count > MAX_COUNT_SHARE * n:
        raise DataError(
            f"data.val_size={count} would hold out {count / n:.0%} of the {n:,} training {unit} (a count may take at "
            f"most {MAX_COUNT_SHARE:.0%}): give a fraction such as data.val_size=0.1, or a smaller count"
        )
    return count


@CARVINGS.register("image")
def split_validation(source: Source, val_size: float, seed: int) -> tuple[Source, Source | None]:
    """Carve a seeded validation split from ``source``: ``val_size`` < 1 is a fraction, otherwise a count."""
    n = len(source)
    count = _count(val_size, n, "images")
    if count <= 0:
        return source, None
    if count >= n:
        raise DataError(f"data.val_size={val_size} leaves no training images (the training split has {n})")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return source.subset(perm[count:].sort().values), source.subset(perm[:count].sort().values)


@CARVINGS.register("identity")
def split_identities(source: Source, val_size: float, seed: int) -> tuple[Source, Source | None]:
    """Carve seeded whole classes (identities) from ``source``: ``val_size`` < 1 is a fraction of the identities,
    otherwise a count of them. Labels keep their values (the task decides what a held-out identity means)."""
    ids = torch.unique(source.labels)
    count = _count(val_size, len(ids), "identities")
    if count <= 0:
        return source, None
    if count >= len(ids):
        raise DataError(f"data.val_size={val_size} leaves no training identities (the training split has {len(ids)})")
    held = ids[torch.randperm(len(ids), generator=torch.Generator().manual_seed(seed))[:count]]
    is_val = torch.isin(source.labels, held)
    return source.subset(torch.nonzero(~is_val).flatten()), source.subset(torch.nonzero(is_val).flatten())


def carve_validation(by: str, source: Source, val_size: float, seed: int) -> tuple[Source, Source | None]:
    """The (train, validation) splits of ``source`` carved ``by`` a registered way."""
    return CARVINGS.get(by)(source, val_size, seed)
