"""Methods: a branch policy plus a list of loss terms over the model's named outputs, as data (``METHODS``); see
:mod:`dhm.methods.core`. Importing the package registers every method."""

from . import reid, siblings  # noqa: F401 - register the re-ID and sibling methods
from .core import METHODS, Method, TermSpec, ce_terms, dhm_terms, get_method, list_methods, suffix_method

__all__ = ["METHODS", "Method", "TermSpec", "ce_terms", "dhm_terms", "get_method", "list_methods", "suffix_method"]
