"""The dataset registry: ``build_dataset(cfg)`` -> :class:`Bundle`."""

from __future__ import annotations

from collections.abc import Callable

from ..config.schema import DataConfig
from ..registry import Registry
from .sources import Bundle

DATASETS: Registry[Callable[[DataConfig], Bundle]] = Registry("dataset")

# ``data.*`` keys that only some readers use; every other data key applies to every dataset.
SPECIFIC_KEYS = (
    "root",
    "download",
    "verify_md5",
    "in_memory",
    "image_size",
    "workers",
    "train_size",
    "test_size",
    "num_classes",
)
DATASET_KEYS: dict[str, tuple[str, ...]] = {}  # dataset -> the specific keys its reader uses


def register_dataset(name: str, keys: tuple[str, ...] = ()) -> Callable:
    """Decorator registering a reader ``fn(cfg: DataConfig) -> Bundle`` that uses the dataset-specific config
    ``keys`` (of ``SPECIFIC_KEYS``); config dumps of this dataset leave the other specific keys out."""
    DATASET_KEYS[name] = tuple(keys)
    return DATASETS.register(name)


def unused_keys(name: str) -> set[str]:
    """The dataset-specific ``data.*`` keys that dataset ``name`` does not read (none for an unknown name)."""
    return set(SPECIFIC_KEYS) - set(DATASET_KEYS[name]) if name in DATASET_KEYS else set()


def build_dataset(cfg: DataConfig) -> Bundle:
    """Read the dataset ``cfg.name`` (raises :class:`~dhm.errors.DataError` on missing or corrupt files)."""
    return DATASETS.get(cfg.name)(cfg)


def list_datasets(pattern: str = "*") -> list[str]:
    """Registered dataset names."""
    return DATASETS.list(pattern)
