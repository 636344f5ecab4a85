"""Datasets (registry), validation splits and device-side loaders."""

from . import cifar, folder, mnist, small  # noqa: F401  (registration side effect)
from .loader import build_loader
from .registry import DATASETS, build_dataset, list_datasets, register_dataset
from .sources import Bundle, FileSource, TensorSource, split_validation, take_subset

__all__ = [
    "DATASETS",
    "Bundle",
    "FileSource",
    "TensorSource",
    "build_dataset",
    "build_loader",
    "list_datasets",
    "register_dataset",
    "split_validation",
    "take_subset",
]
