"""``dhm bench``: what DHM costs (see BENCHMARKS.md)."""

from .measure import Case, branch_specs, count_flops
from .report import save, to_markdown
from .suite import run_bench

__all__ = ["Case", "branch_specs", "count_flops", "run_bench", "save", "to_markdown"]
