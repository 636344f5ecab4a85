"""The training engine: Trainer, evaluation, checkpoints, distributed helpers."""

from .trainer import Trainer, evaluate, train

__all__ = ["Trainer", "evaluate", "train"]
