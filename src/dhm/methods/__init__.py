"""Methods as contracts (``METHODS``): requirements, options, soft defaults and the loss terms a method adds to the
task's supervision, as data; see :mod:`dhm.methods.core`. Importing the package registers every built-in method."""

from . import reid, siblings  # noqa: F401 - register the re-ID and sibling methods
from .core import METHODS, SHARED_KEYS, Method, TermSpec, get_method, layout_family, list_methods, pair_kl
from .reid import RENAMED

__all__ = [
    "METHODS",
    "RENAMED",
    "SHARED_KEYS",
    "Method",
    "TermSpec",
    "get_method",
    "layout_family",
    "list_methods",
    "pair_kl",
]
