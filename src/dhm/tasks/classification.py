"""The task ``classification``: top-1 of every head and of their ensemble (mean of the softmax outputs), how often
every head predicts the main head's class, and the main head's cross-entropy; ``acc1/main`` selects best.pt."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..branches import DHMModel, head_logits, unwrap
from ..errors import DataError
from .base import TASKS, EvalContext, PlotPanel, Task, format_rows


class Classification(Task):
    """Category recognition: labels are class indices, every head is a classifier."""

    name = "classification"
    primary = "acc1/main"
    minimize = frozenset({"loss"})
    select_split = "val"
    report_splits = ("test",)
    train_metric = "acc1"
    labels = {"acc1/main": ("acc", " (%)")}
    panels = (
        PlotPanel(
            "accuracy.png",
            "top-1 accuracy per head: validation (solid), training batches (dashed)",
            "top-1 accuracy (%)",
            ("val/acc1/", "train/acc1/"),
            ("val", "train"),
            "acc1/main",
        ),
    )

    def check_labels(self, split: str, labels: Tensor, num_classes: int) -> None:
        """Class indices 0..classes-1 in every split (a test label outside the training classes is refused)."""
        low, high = (int(labels.min()), int(labels.max())) if len(labels) else (0, 0)
        if low < 0 or high >= num_classes:
            raise DataError(
                f"{split} label {low if low < 0 else high} is out of range for {num_classes} classes "
                "(labels must be 0..classes-1; model.num_classes)"
            )

    def step_counters(self, outputs: Any, target: Tensor) -> Tensor:
        """Correct predictions per head, main first."""
        return torch.stack([(z.argmax(-1) == target).sum() for z in head_logits(outputs)])

    def train_metrics(self, counts: Sequence[float], seen: float, heads: Sequence[str]) -> dict[str, float]:
        result = {"acc1": 100.0 * counts[0] / seen}  # the main head
        if len(heads) > 1:
            result.update({f"acc1/{name}": 100.0 * hits / seen for name, hits in zip(heads, counts)})
        return result

    def progress(self, counts: Tensor | None, seen: int) -> dict[str, str]:
        return {"acc": f"{100 * counts[0].item() / seen:.1f}"} if counts is not None and seen else {}

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: Iterable, ctx: EvalContext) -> dict[str, float]:
        """Top-1 (%) of the main head, and with ``ctx.heads`` of every head and of their ensemble, summed over
        processes; in eval mode (the previous mode is restored)."""
        inner = unwrap(model)
        was_training = inner.training
        inner.eval()
        names = inner.head_names if ctx.heads and isinstance(inner, DHMModel) else ("main",)
        correct = torch.zeros(len(names) + 2, dtype=torch.float64, device=ctx.device)  # heads, ensemble, agree
        loss_sum = torch.zeros((), dtype=torch.float64, device=ctx.device)
        count = torch.zeros((), dtype=torch.float64, device=ctx.device)
        for i, batch in enumerate(loader):
            x, y = batch[0], batch[1]
            if ctx.log is not None and i:
                ctx.log(i)  # batches done so far
            with ctx.autocast():
                outs = inner.forward_heads(x) if len(names) > 1 else (inner(x),)
            outs = [o.float() for o in outs]
            ensemble = torch.stack([o.softmax(-1) for o in outs]).mean(0)
            for k, o in enumerate([*outs, ensemble]):
                correct[k] += (o.argmax(-1) == y).sum()
            predictions = torch.stack([o.argmax(-1) for o in outs])
            correct[-1] += (predictions == predictions[0]).all(0).sum()
            loss_sum += F.cross_entropy(outs[0], y, reduction="sum")
            count += y.numel()
        ctx.reduce_sum(correct), ctx.reduce_sum(loss_sum), ctx.reduce_sum(count)
        inner.train(was_training)
        n = max(count.item(), 1.0)
        result = {f"acc1/{name}": 100.0 * c / n for name, c in zip([*names, "ensemble"], correct.tolist())}
        if len(names) == 1:
            result.pop("acc1/ensemble")
        else:  # how often every head predicts the main head's class (the mimicking's visible effect)
            result["agree"] = 100.0 * correct[-1].item() / n
        result["loss"] = loss_sum.item() / n
        return result

    def describe(self, result: dict[str, float]) -> str:
        accs = "  ".join(f"{k.removeprefix('acc1/')} {v:.2f}" for k, v in result.items() if k.startswith("acc1/"))
        return f"top-1 % {accs}  (loss {result['loss']:.4f})"

    def head_metric(self, head: str) -> str:
        return f"acc1/{head}"

    def epoch_fields(self, record: dict[str, Any]) -> str:
        heads = " ".join(f"{k.split('/')[-1]} {v:.2f}" for k, v in record.items() if k.startswith("val/acc1/"))
        return f"train acc {record['train/acc1']:.2f}  val acc [{heads}]"

    def summary_entries(self, best: dict[str, float], last: dict[str, float], val: dict[str, float]) -> dict:
        """The keys scripts read: ``test_acc1`` (the checkpoint chosen on validation), ``test_acc1_last``,
        ``best_val_acc1``."""
        return {
            "test_acc1": best.get("acc1/main"),
            "test_acc1_last": last.get("acc1/main"),
            "best_val_acc1": val.get("acc1/main"),
        }

    def reported(self, heads: Sequence[str]) -> set[str]:
        return {*(f"acc1/{h}" for h in [*heads, "ensemble"]), "agree", "loss"}

    def summary_table(
        self, heads: Sequence[str], val: dict[str, float], best: dict[str, float], last: dict[str, float]
    ) -> str:
        """Top-1 (%) per head: validation and test of the chosen checkpoint (best.pt), test of the last epoch."""
        rows = [("head", "val (best.pt)", "test (best.pt)", "test (last)")]
        for head in [*heads, "ensemble"]:
            key = f"acc1/{head}"
            if key in best or key in val:
                rows.append((head, *(f"{d[key]:.2f}" if key in d else "-" for d in (val, best, last))))
        return format_rows(rows)


TASKS.register("classification")(Classification())
