"""What ``dhm compare`` runs: a comparison mode is a method (:mod:`dhm.methods`), optionally with settings of its
own for sweeps (``dhm-rampup+loss.rampup_epochs=15``); where each run goes; which seeds."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from ..config import Config
from ..errors import ConfigError
from ..methods import get_method
from ..registry import RegistryError


def mode_overrides(mode: str, cfg: Config) -> list[str]:
    """The overrides of ``mode``: a method name, optionally followed by ``+key=value`` settings of its own,
    e.g. ``dhm-rampup+loss.rampup_epochs=15+loss.temperature=3`` (for sweeps). The method resolves as under
    ``dhm train`` (:mod:`dhm.config.resolve`): the recipe's settings stay, the method's requirements apply."""
    base, *extra = re.split(r"\+(?=[a-z_][a-z0-9_]*\.[a-z0-9_.]+=)", mode)  # keys may hold digits: loss.t2
    try:
        method = get_method(base)
    except RegistryError as exc:
        raise RegistryError(str(exc).replace("unknown method", "unknown comparison mode", 1)) from None
    if any("=" not in e for e in extra):
        raise ConfigError(f"mode {mode!r}: settings after the name are +section.key=value")
    return [f"loss.mode={method.alias_of or base}", *extra]


def run_dir(root: Path, mode: str, seed: int) -> Path:
    return root / mode / f"seed{seed}"


def seed_list(seeds: int | str | Sequence[int]) -> list[int]:
    """``3`` (a count: seeds 0, 1, 2), ``"3"``, ``"0,4,7"`` or a sequence of seeds -> the list of seeds."""
    if isinstance(seeds, str):
        parts = [p.strip() for p in seeds.split(",") if p.strip()]
        try:
            values = [int(p) for p in parts]
        except ValueError:
            raise ConfigError(f"--seeds takes a count or a comma-separated list of seeds, got {seeds!r}") from None
        seeds = values[0] if len(values) == 1 and "," not in seeds else values
    if isinstance(seeds, int):
        if seeds < 1:
            raise ConfigError(f"--seeds must be >= 1, got {seeds}")
        return list(range(seeds))
    values = list(seeds)
    if not values or any(v < 0 for v in values) or len(set(values)) != len(values):
        raise ConfigError(f"--seeds needs distinct seeds >= 0, got {values}")
    return values
