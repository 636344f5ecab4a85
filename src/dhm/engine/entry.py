"""The entry points of a training run from a config: :func:`build_trainer` (resolve the runtime once, build the
parts) and :func:`train` (which also owns the process group under torchrun)."""

from __future__ import annotations

from typing import Any

from ..config import Config
from . import dist as D
from .parts import build_parts
from .runtime import resolve_runtime
from .trainer import Trainer, check_resume_early


def build_trainer(cfg: Config, dist: D.DistInfo | None = None) -> Trainer:
    """Resolve the runtime of ``cfg`` for this process and build its parts: a Trainer ready to ``fit()``.

    Example:
        >>> summary = build_trainer(load_config("demo")).fit()
    """
    check_resume_early(cfg)  # a resume with changed settings is refused before the data is read
    runtime = resolve_runtime(cfg.train, dist)
    return Trainer(cfg, build_parts(cfg, runtime), runtime)


def train(cfg: Config) -> dict[str, Any]:
    """The entry point of a training run (``dhm train``): join the process group when launched by torchrun, train
    ``cfg``, leave the group; returns the summary (what ``summary.json`` holds)."""
    dist = D.setup(cfg.train.device)
    try:
        return build_trainer(cfg, dist).fit()
    finally:
        D.teardown()
