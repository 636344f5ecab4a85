"""Typed config schema and recipe loading."""

from .io import config_from_dict, dump_config, load_config, resolve_recipe, to_dict
from .recipe_files import list_recipes
from .schema import Config, DataConfig, LossConfig, ModelConfig, OptimConfig, TrainConfig

__all__ = [
    "Config",
    "DataConfig",
    "LossConfig",
    "ModelConfig",
    "OptimConfig",
    "TrainConfig",
    "config_from_dict",
    "dump_config",
    "list_recipes",
    "load_config",
    "resolve_recipe",
    "to_dict",
]
