"""Side branches: specs, staged backbones, builders and the branched model."""

from .builders import BRANCH_BUILDERS, Branch
from .model import DHMModel, attach_branches, strip, unwrap
from .spec import BranchSpec
from .staged import StageAdapter, StagedBackbone, find_adapter, get_adapter, register_adapter

__all__ = [
    "BRANCH_BUILDERS",
    "Branch",
    "BranchSpec",
    "DHMModel",
    "StageAdapter",
    "StagedBackbone",
    "attach_branches",
    "find_adapter",
    "get_adapter",
    "register_adapter",
    "strip",
    "unwrap",
]
