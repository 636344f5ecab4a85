"""Side branches: specs, stage plans, staged backbones, builders and the branched model."""

from .builders import BRANCH_BUILDERS, Branch
from .model import DHMModel, attach_branches, strip, unwrap
from .plan import PLAN_SOURCES, Stage, StagePlan, stage_plan
from .spec import BranchSpec
from .staged import StagedBackbone
from .trace import SplitError

__all__ = [
    "BRANCH_BUILDERS",
    "PLAN_SOURCES",
    "Branch",
    "BranchSpec",
    "DHMModel",
    "SplitError",
    "Stage",
    "StagePlan",
    "StagedBackbone",
    "attach_branches",
    "stage_plan",
    "strip",
    "unwrap",
]
