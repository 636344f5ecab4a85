"""Tasks: what a training step measures, how a split is evaluated and which metric selects the best checkpoint.
``TASKS`` holds them by name; ``classification`` (per-head top-1, ensemble, agreement, cross-entropy) is the
default (``train.task``)."""

from .base import TASKS, EvalContext, PlotPanel, Task, get_task
from .classification import Classification

__all__ = ["TASKS", "Classification", "EvalContext", "PlotPanel", "Task", "get_task"]
