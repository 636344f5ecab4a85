"""Checks of a user's batches (``dhm.fit``), so that a wrong loader is one line naming the loader, the batch and
what was expected, never a raw PyTorch error: the types, dtypes and shapes of every batch (metadata: free), the
label range of every batch whose labels are still on the host (no device synchronisation), that of batches already
on a GPU at the end of the epoch, a probe forward of one image on each loader's first batch, and an epoch that
yields no batch."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from ..errors import DataError

Probe = Callable[[Tensor], None]


def model_probe(model: nn.Module) -> Probe:
    """A probe that runs one image through ``model`` in eval mode without gradients (its state untouched) and turns
    a shape error into a DataError."""

    def probe(x: Tensor) -> None:
        training = model.training
        model.eval()
        try:
            with torch.no_grad():
                model(x[:1])
        except RuntimeError as exc:  # the model cannot take images of this size or channel count
            line = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
            raise DataError(f"the model cannot take images of shape {tuple(x.shape[1:])}: {line}") from None
        finally:
            model.train(training)

    return probe


def num_outputs(model: nn.Module) -> int | None:
    """The class count of a classifier: its stage plan's, else the output size of its last Linear layer."""
    plan = getattr(model, "plan", None)
    if plan is not None and getattr(plan, "num_classes", 0):
        return int(plan.num_classes)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return linears[-1].out_features if linears else None


class BatchCheck:
    """The checks of one loader's batches over one pass (``start`` at the top of each epoch)."""

    def __init__(self, name: str, num_classes: int | None, probe: Probe | None = None) -> None:
        self.name, self.num_classes, self.probe = name, num_classes, probe
        self.shape: tuple[int, ...] | None = None  # (C, H, W) of the first batch ever seen
        self.probed = False
        self.seen = 0
        self.bounds: Tensor | None = None  # running (-min, max) of device labels

    def start(self) -> None:
        self.seen, self.bounds = 0, None

    def _fail(self, why: str) -> DataError:
        return DataError(f"the {self.name} loader's batch {self.seen}: {why}")

    def batch(self, x: Tensor, y: Tensor) -> None:
        """Check one batch as the loader yields it (before it moves to the training device)."""
        self.seen += 1
        if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
            raise self._fail(f"labels must be integer class indices (torch.int64), got {y.dtype}")
        if x.dim() != 4 or y.dim() != 1 or y.shape[0] != x.shape[0]:
            raise self._fail(
                f"expected images (N, C, H, W) and N labels, got images {tuple(x.shape)} and labels {tuple(y.shape)}"
            )
        if x.shape[0] == 0:
            raise self._fail("it holds no images")
        if self.shape is None:
            self.shape = tuple(x.shape[1:])
        elif tuple(x.shape[1:]) != self.shape:
            raise self._fail(f"images of shape {tuple(x.shape[1:])}, the first batch's were {self.shape}")
        if self.num_classes is None:
            return
        if y.device.type == "cpu":  # on the host: checked now, without touching the device
            low, high = int(y.min()), int(y.max())
            if low < 0 or high >= self.num_classes:
                bad = low if low < 0 else high
                raise self._fail(f"label {bad} is out of range for a model with {self.num_classes} classes")
        else:  # already on a GPU: folded in without a sync, read at the end of the epoch
            bounds = torch.stack([-y.min(), y.max()])
            self.bounds = bounds if self.bounds is None else torch.maximum(self.bounds, bounds)

    def first_on_device(self, x: Tensor) -> None:
        """The probe forward, on the loader's first batch ever (on the training device)."""
        if self.probe is not None and not self.probed:
            self.probed = True
            try:
                self.probe(x)
            except DataError as exc:
                raise DataError(f"the {self.name} loader's batch 1: {exc}") from None

    def finish(self, epoch_hint: str = "") -> None:
        """At the end of a pass: refuse an empty one, and read the device labels' range."""
        if self.seen == 0:
            raise DataError(f"the {self.name} loader yielded no batches{epoch_hint}; it must yield (images, labels)")
        if self.bounds is not None and self.num_classes is not None:
            low, high = (-self.bounds[0]).item(), self.bounds[1].item()
            if low < 0 or high >= self.num_classes:
                bad = low if low < 0 else high
                raise DataError(
                    f"the {self.name} loader yielded label {bad} this epoch, out of range for a model with "
                    f"{self.num_classes} classes"
                )
