"""The dataset registry: ``build_dataset(cfg)`` -> :class:`Bundle`."""

from __future__ import annotations

from collections.abc import Callable

from ..config.datakeys import DATASET_KEYS, SPECIFIC_KEYS, unused_keys
from ..config.schema import DataConfig
from ..options import READERS
from ..registry import Registry
from .sources import Bundle

__all__ = ["DATASETS", "SPECIFIC_KEYS", "build_dataset", "list_datasets", "register_dataset", "unused_keys"]

DATASETS: Registry[Callable[[DataConfig], Bundle]] = Registry("dataset")


def register_dataset(name: str, keys: tuple[str, ...] = (), options: type | None = None) -> Callable:
    """Decorator registering a reader ``fn(cfg: DataConfig) -> Bundle`` that uses the dataset-specific config
    ``keys`` (of ``SPECIFIC_KEYS``; config dumps of this dataset leave the other specific keys out) and its own
    typed ``options`` (a dataclass: ``data.options.*``, checked when a config naming this dataset is resolved)."""
    DATASET_KEYS[name] = tuple(keys)
    if options is not None:
        READERS[name] = options
    return DATASETS.register(name)


def build_dataset(cfg: DataConfig) -> Bundle:
    """Read the dataset ``cfg.name`` (raises :class:`~dhm.errors.DataError` on missing or corrupt files)."""
    return DATASETS.get(cfg.name)(cfg)


def list_datasets(pattern: str = "*") -> list[str]:
    """Registered dataset names."""
    return DATASETS.list(pattern)
