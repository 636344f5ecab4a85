"""dhm: Dynamic Hierarchical Mimicking (Li & Chen, CVPR 2020) for PyTorch.

Example:
    >>> import dhm
    >>> model = dhm.create_model("cifar_resnet32", num_classes=100)          # backbone + the paper's branches
    >>> losses = dhm.MimicLoss()(model(images), labels)                        # losses["loss"].backward()
    >>> deployable = dhm.strip(model)                                          # the plain backbone
"""

from . import builtins  # noqa: F401 - register the methods written as plugin files (DLB)
from .api_loss import MimicLoss
from .branches import (
    BranchSpec,
    DHMModel,
    HeadOutputs,
    StagedBackbone,
    StagePlan,
    attach_branches,
    stage_plan,
    strip,
)
from .branches.deploy import GatedEnsemble, deployable
from .data import SAMPLERS, Batch
from .deployed import load_deployed
from .engine.checkpoint_eval import evaluate_checkpoint
from .engine.fit import fit
from .losses import Objective, mimic_loss
from .gallery import GalleryIndex, build_index
from .methods import METHODS, Method, TermSpec
from .models import create_model, list_models, paper_branches, register_model
from .official import load_official
from .tasks import TASKS, Task
from .version import __version__

__all__ = [
    "METHODS",
    "SAMPLERS",
    "TASKS",
    "Batch",
    "BranchSpec",
    "DHMModel",
    "GalleryIndex",
    "GatedEnsemble",
    "HeadOutputs",
    "Method",
    "MimicLoss",
    "Objective",
    "StagePlan",
    "StagedBackbone",
    "Task",
    "TermSpec",
    "__version__",
    "attach_branches",
    "build_index",
    "create_model",
    "deployable",
    "evaluate_checkpoint",
    "fit",
    "list_models",
    "load_deployed",
    "load_official",
    "mimic_loss",
    "paper_branches",
    "register_model",
    "stage_plan",
    "strip",
]
