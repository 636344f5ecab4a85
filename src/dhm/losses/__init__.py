"""Losses: registered terms over a model's named head outputs (``TERMS``: ``ce``, ``pair_kl``, ``triplet``,
``pair_dist``, ``center``, and the siblings' ``ce_aux``, ``squared_hinge``, ``byot``, ``okddip``, ``cskd``, ``pskd``), pair graphs
(``PAIR_GRAPHS``), the :class:`Objective` that sums a method's terms, and DHM's own loss for API users
(:class:`MimicLoss`, :func:`mimic_loss`)."""

from .aux import AuxCrossEntropy
from .byot import SelfTeaching
from .center import CenterLoss
from .embedding import BatchHardTriplet, PairDistance
from .hinge import SquaredHinge, squared_hinge
from .kl import PAIR_GRAPHS, graph_weights, pair_kl
from .mimic import MODES, MimicLoss, mimic_loss
from .objective import Objective, head_names
from .okddip import DiversePeers
from .self_kd import ClassWiseKD, ProgressiveSelfKD
from .terms import TERMS, CrossEntropy, PairKL, Term

__all__ = [
    "MODES",
    "PAIR_GRAPHS",
    "TERMS",
    "AuxCrossEntropy",
    "BatchHardTriplet",
    "CenterLoss",
    "ClassWiseKD",
    "CrossEntropy",
    "DiversePeers",
    "MimicLoss",
    "Objective",
    "PairDistance",
    "PairKL",
    "ProgressiveSelfKD",
    "SelfTeaching",
    "SquaredHinge",
    "Term",
    "graph_weights",
    "head_names",
    "mimic_loss",
    "pair_kl",
    "squared_hinge",
]
