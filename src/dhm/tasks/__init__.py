"""Tasks: what a training step measures, how a split is evaluated and which metric selects the best checkpoint.
``TASKS`` holds them by name; ``classification`` (per-head top-1, ensemble, agreement, cross-entropy) is the
default (``train.task``); ``retrieval`` ranks embeddings (re-ID: rank-k, mAP, mINP)."""

from .base import LAST, TASKS, EvalContext, PlotPanel, Task, get_task, select_metric
from .classification import Classification
from .retrieval import Retrieval

__all__ = [
    "LAST",
    "TASKS",
    "Classification",
    "EvalContext",
    "PlotPanel",
    "Retrieval",
    "Task",
    "get_task",
    "select_metric",
]
