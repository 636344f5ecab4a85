"""Shared fixtures. torchvision's CUDA wheel cannot load its C extension next to the CPU torch used here, so its
two operator schemas are defined before importing it; its Python parts (models) then work."""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import pytest
import torch

# Under pytest-xdist (`-n 2`, the default addopts) each worker is one process of the suite: one torch thread each,
# so that two workers on two cores never oversubscribe OpenMP (which slows CPU kernels many times over).
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"

# The read-only datasets beside the checkout (CI has them); DHM_SHARED_DATA points elsewhere.
SHARED_DATA = Path(os.environ.get("DHM_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def _import_torchvision():
    try:
        return importlib.import_module("torchvision")
    except Exception:
        pass
    try:
        lib = torch.library.Library("torchvision", "DEF")
        lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        _import_torchvision.lib = lib  # keep the library object alive
        return importlib.import_module("torchvision")
    except Exception as exc:  # torchvision absent or unusable
        _import_torchvision.error = repr(exc)
        return None


@pytest.fixture(scope="session")
def torchvision():
    """The torchvision module, or a skip with the reason it cannot be imported."""
    tv = _import_torchvision()
    if tv is None:
        pytest.skip(f"torchvision cannot be imported here: {getattr(_import_torchvision, 'error', 'not installed')}")
    return tv


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


def tiny_cifar(name: str = "cifar_resnet20", num_classes: int = 10, **kwargs):
    """A narrow CIFAR ResNet for fast tests (widths 8/8/16)."""
    import dhm

    return dhm.create_model(name, num_classes=num_classes, widths=(8, 8, 16), **kwargs)


@pytest.fixture(scope="session")
def timm(torchvision):
    """The timm module (it imports torchvision's Python parts), or a skip with the reason."""
    try:
        return importlib.import_module("timm")
    except Exception as exc:
        pytest.skip(f"timm cannot be imported here: {exc!r}")
