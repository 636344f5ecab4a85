"""``dhm compare``: every method x seed under one recipe (:mod:`.run`), what a mode is (:mod:`.modes`), the table
(:mod:`.table`) and the plots (:mod:`.plots`)."""

from .modes import mode_overrides, run_dir, seed_list
from .plots import plot, plot_dynamics
from .run import run_compare
from .table import summarise, to_markdown

__all__ = [
    "mode_overrides",
    "plot",
    "plot_dynamics",
    "run_compare",
    "run_dir",
    "seed_list",
    "summarise",
    "to_markdown",
]
