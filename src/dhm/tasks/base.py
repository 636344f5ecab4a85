"""The task seam: a :class:`Task` says what a training step counts (device counters, summed at the epoch's one
sync point), how an evaluation split becomes a dict of named metrics, which metric is primary, and how its
metrics are shown (epoch line, summary table, plots). The engine never names a metric itself.

A task evaluates through an :class:`EvalContext` the engine gives it (device, mixed precision, summing over
processes), so tasks depend on nothing above the model layer.
"""

from __future__ import annotations

import contextlib
import difflib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn

from ..errors import ConfigError
from ..gather import gather_rows
from ..options import TASK_SAMPLERS
from ..registry import Registry


@dataclass(frozen=True)
class EvalContext:
    """What the engine lends a task's evaluation: the device, a mixed-precision context, a sum over processes
    and a gather of every process's rows (both identity in a world of one) and an optional progress callback
    ``log(batches_done)``."""

    device: Any
    autocast: Callable[[], contextlib.AbstractContextManager]
    reduce_sum: Callable[[Tensor], Tensor]
    gather: Callable[[Tensor], Tensor] = gather_rows  # every process's rows, concatenated (dhm.gather)
    heads: bool = True  # every head (and their ensemble) or only the deployed one
    log: Callable[[int], None] | None = None
    options: dict[str, Any] = field(default_factory=dict)  # the task's evaluation options (retrieval: flip, rerank)


@dataclass(frozen=True)
class PlotPanel:
    """One PNG of a run's history: the per-head record keys that start with any of ``prefixes`` (a line style
    each, named ``names`` in the legend); ``report_key`` is the test metric marked at best.pt and the last epoch."""

    filename: str
    title: str
    ylabel: str
    prefixes: tuple[str, ...]
    names: tuple[str, ...] = ()
    report_key: str = ""


class Task:
    """Base class of tasks. Subclasses set the class attributes and implement the methods below.

    Attributes:
        name: the registry name (``train.task``).
        primary: the task's main metric of an evaluated split (what tables report).
        default_select: what picks best.pt where ``train.select`` is not given: ``""`` the best epoch by
            ``primary`` on the selection split, ``last`` the last epoch (:data:`LAST`).
        minimize: metrics where lower is better (every other metric: higher is better).
        select_split: the split evaluated after every epoch, on which the checkpoint is chosen.
        report_splits: the splits evaluated at the end, for the last and the chosen checkpoint.
        train_metric: the training metric shown as the run's training score (record key ``train/<it>``).
        carve: how the validation split is carved from the training split by default (``data.val_by``;
            :data:`dhm.data.CARVINGS`: ``image`` or ``identity``).
        sampler: the training order by default where ``data.sampler`` is not given (:data:`dhm.data.SAMPLERS`).
    """

    name = "task"
    primary = "loss"
    default_select = ""
    minimize: frozenset[str] = frozenset({"loss"})
    select_split = "val"
    report_splits: tuple[str, ...] = ("test",)
    train_metric = "loss"
    carve = "image"
    sampler = "random"
    panels: tuple[PlotPanel, ...] = ()
    labels: dict[str, tuple[str, str]] = {}  # metric -> (words, unit) shown in comparison tables
    eval_options: tuple[str, ...] = ()  # the evaluation options it reads (dhm eval --flip --rerank: retrieval's)

    # ----- data ---------------------------------------------------------------------------------------------
    def check_labels(self, split: str, labels: Tensor, num_classes: int) -> None:
        """Refuse labels the task cannot train or evaluate (raise :class:`~dhm.errors.DataError`)."""

    def check_splits(self, train: Any, evals: dict[str, Any], separate_ids: bool = False) -> None:
        """Refuse, before training, splits the task cannot train or evaluate (``evals``: name -> source or None;
        ``separate_ids``: the dataset numbers its evaluation identities apart); raise :class:`~dhm.errors.DataError`."""

    # ----- training -----------------------------------------------------------------------------------------
    def supervision(self, loss: Any, heads: str) -> list[tuple[str, dict[str, Any]]]:
        """The loss terms (registered name, options) that supervise ``heads`` (``all`` or ``main``) under the run's
        ``loss`` config (its shared keys and ``loss.supervision``, the task's options): cross-entropy with the
        run's label smoothing by default."""
        return [("ce", {"heads": heads, "label_smoothing": loss.label_smoothing})]

    def step_counters(self, outputs: Any, target: Tensor) -> Tensor | None:
        """Device counters of one training micro-batch, a float (K,) tensor summed over the epoch (no host
        synchronisation). ``None``: nothing counted."""
        return None

    def train_metrics(self, counts: Sequence[float], seen: float, heads: Sequence[str]) -> dict[str, float]:
        """The epoch's training metrics (record keys without ``train/``) from the summed counters."""
        return {}

    def progress(self, counts: Tensor | None, seen: int) -> dict[str, str]:
        """Extra fields of the progress bar (read from the device only when a bar is drawn)."""
        return {}

    # ----- evaluation ---------------------------------------------------------------------------------------
    def evaluate(self, model: nn.Module, loader: Iterable, ctx: EvalContext) -> dict[str, float]:
        """Named metrics of one split."""
        raise NotImplementedError

    def head_metric(self, head: str) -> str | None:
        """The metric of one head in an evaluated split (comparison tables), or ``None`` for tasks without heads."""
        return None

    def reported(self, heads: Sequence[str]) -> set[str] | None:
        """Every metric an evaluated split can report for a model of ``heads`` (``train.select`` must name one), or
        ``None`` when the task does not say (then the first validation checks it)."""
        return None

    # ----- presentation -------------------------------------------------------------------------------------
    def epoch_fields(self, record: dict[str, Any]) -> str:
        """The task's part of the epoch line, e.g. ``train acc 22.21  val acc [main 15.62 head1 20.31]``."""
        shown = [f"{k} {v:.4g}" for k, v in record.items() if k.startswith(f"{self.select_split}/")]
        return "  ".join(shown)

    def summary_entries(self, best: dict[str, float], last: dict[str, float], val: dict[str, float]) -> dict:
        """Top-level summary keys of the task (best: the chosen checkpoint on the first report split)."""
        return {}

    def summary_table(
        self, heads: Sequence[str], val: dict[str, float], best: dict[str, float], last: dict[str, float]
    ) -> str:
        """The table printed at the end of a run: every metric of the selection and the first report split."""
        rows = [("metric", f"{self.select_split} (best)", "best", "last")]
        for key in sorted({*val, *best}):
            rows.append((key, *(f"{d[key]:.4g}" if key in d else "-" for d in (val, best, last))))
        return format_rows(rows)

    def describe(self, result: dict[str, float]) -> str:
        """One evaluated split's metrics in a line (``dhm eval``)."""
        return "  ".join(f"{k} {v:.4g}" for k, v in result.items())

    def higher_is_better(self, metric: str) -> bool:
        return metric.split("/")[0] not in self.minimize and metric not in self.minimize


def format_rows(rows: Sequence[Sequence[str]]) -> str:
    """A fixed-width table: the first column left-aligned, the rest right-aligned, a rule under the header."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


class _Tasks(Registry[Task]):
    """The task registry; registering a task also tells the config which sampler it draws with by default."""

    def register(self, name: str | None = None, **meta):
        deco = super().register(name, **meta)

        def record(task: Task) -> Task:
            TASK_SAMPLERS[name or task.name] = task.sampler
            return deco(task)

        return record


TASKS: Registry[Task] = _Tasks("task")


def get_task(name: str) -> Task:
    """The registered task ``name`` (a one-line error with suggestions for an unknown one)."""
    return TASKS.get(name)


#: ``train.select=last``: best.pt is the last epoch (the validation split is still evaluated, for the record)
LAST = "last"


def select_metric(task: Task, select: str, heads: Sequence[str] = ("main",)) -> str:
    """The metric of the selection split that picks best.pt (or :data:`LAST`): ``train.select``, default the
    task's ``default_select`` or its primary metric; a metric the task never reports for these heads is refused
    (never a silent "the last epoch is best")."""
    metric = select or task.default_select or task.primary
    if metric == LAST:
        return LAST
    known = task.reported(heads)
    if select and known is not None and metric not in known:
        close = difflib.get_close_matches(metric, sorted(known), n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise ConfigError(
            f"train.select={metric}: the {task.name} task reports {', '.join(sorted(known))} for this model{hint}"
        )
    return metric
