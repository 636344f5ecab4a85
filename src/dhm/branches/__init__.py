"""Side branches: specs, stage plans, staged backbones, builders and the branched model."""

from .builders import BRANCH_BUILDERS, Branch
from .byot import HintBranch
from .layouts import LAYOUTS, PeerBranch, layout_specs
from .model import DHMModel, HeadOutputs, attach_branches, head_logits, strip, unwrap
from .neck import BNNeck, add_neck, has_neck, head_dims
from .plan import PLAN_SOURCES, Stage, StagePlan, stage_plan
from .spec import BranchSpec
from .staged import StagedBackbone
from .trace import SplitError

__all__ = [
    "BRANCH_BUILDERS",
    "LAYOUTS",
    "PLAN_SOURCES",
    "BNNeck",
    "Branch",
    "BranchSpec",
    "DHMModel",
    "HeadOutputs",
    "HintBranch",
    "PeerBranch",
    "SplitError",
    "Stage",
    "StagePlan",
    "StagedBackbone",
    "add_neck",
    "attach_branches",
    "has_neck",
    "head_dims",
    "head_logits",
    "layout_specs",
    "stage_plan",
    "strip",
    "unwrap",
]
