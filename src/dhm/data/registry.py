"""The dataset registry: ``build_dataset(cfg)`` -> :class:`Bundle`."""

from __future__ import annotations

from collections.abc import Callable

from ..config.schema import DataConfig
from ..registry import Registry
from .sources import Bundle

DATASETS: Registry[Callable[[DataConfig], Bundle]] = Registry("dataset")


def register_dataset(name: str) -> Callable:
    """Decorator registering a reader ``fn(cfg: DataConfig) -> Bundle``."""
    return DATASETS.register(name)


def build_dataset(cfg: DataConfig) -> Bundle:
    """Read the dataset ``cfg.name`` (raises :class:`~dhm.errors.DataError` on missing or corrupt files)."""
    return DATASETS.get(cfg.name)(cfg)


def list_datasets(pattern: str = "*") -> list[str]:
    """Registered dataset names."""
    return DATASETS.list(pattern)
