"""The training engine as parts: the runtime resolved once (:func:`resolve_runtime`), building
(:func:`build_parts`), one epoch (:func:`train_one_epoch`), evaluation (:func:`evaluate`), the :class:`Trainer`
that runs built parts into a run directory, the run's ending (:func:`finish_run`), :func:`fit` for a user's own
model and loaders, and :func:`evaluate_checkpoint` (``dhm eval``). :func:`train` and :func:`build_trainer` are the
entry points from a config; :func:`train` owns the process group."""

from .checkpoint_eval import evaluate_checkpoint
from .entry import build_trainer, train
from .epoch import train_one_epoch
from .evaluate import evaluate
from .finish import finish_run
from .fit import fit
from .parts import Parts, RunMeta, build_parts
from .runtime import Runtime, resolve_runtime
from .trainer import Trainer

__all__ = [
    "Parts",
    "RunMeta",
    "Runtime",
    "Trainer",
    "build_parts",
    "build_trainer",
    "evaluate",
    "evaluate_checkpoint",
    "finish_run",
    "fit",
    "resolve_runtime",
    "train",
    "train_one_epoch",
]
