"""The model zoo. Importing the family modules runs their ``@register_model`` decorators."""

from . import cifar_resnet, densenet, resnet, wrn  # noqa: F401  (registration side effect)
from .registry import MODELS, create_model, list_models, paper_branches, register_model

__all__ = ["MODELS", "create_model", "list_models", "paper_branches", "register_model"]
