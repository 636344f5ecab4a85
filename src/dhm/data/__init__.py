"""Datasets (registry), validation carvings, samplers, batch plans and device-side loaders."""

from . import cifar, folder, mnist, reid, small  # noqa: F401  (registration side effect)
from .batch import Batch, batch_meta
from .carving import CARVINGS, carve_validation, split_identities, split_validation
from .loader import build_loader
from .plan import BatchPlan
from .registry import DATASETS, build_dataset, list_datasets, register_dataset
from .samplers import SAMPLERS, Sampler, build_sampler, list_samplers
from .sources import Bundle, FileSource, TensorSource, take_subset

__all__ = [
    "CARVINGS",
    "DATASETS",
    "SAMPLERS",
    "Batch",
    "BatchPlan",
    "Bundle",
    "FileSource",
    "Sampler",
    "TensorSource",
    "batch_meta",
    "build_dataset",
    "build_loader",
    "build_sampler",
    "carve_validation",
    "list_datasets",
    "list_samplers",
    "register_dataset",
    "split_identities",
    "split_validation",
    "take_subset",
]
