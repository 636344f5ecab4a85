"""The training engine as parts: building (:func:`build_parts`), one epoch (:func:`train_one_epoch`), evaluation
(:func:`evaluate`), the :class:`Trainer` that runs built parts into a run directory, the run's ending
(:func:`finish_run`), and :func:`fit` for a user's own model and loaders. :func:`train` is the entry point that
owns the process group."""

from .epoch import train_one_epoch
from .evaluate import evaluate
from .finish import finish_run
from .fit import fit
from .parts import Parts, RunMeta, build_parts
from .trainer import Trainer, train

__all__ = [
    "Parts",
    "RunMeta",
    "Trainer",
    "build_parts",
    "evaluate",
    "finish_run",
    "fit",
    "train",
    "train_one_epoch",
]
