"""Training steps (``STEPS``): ``eager``, ``graph`` (the whole step in one CUDA graph), and the steps methods own:
``alternating`` (DML's peer-by-peer update) and ``pairs`` (CS-KD's partners in a forward of their own). A method
names its step kind; the engine runs it knowing no method."""

from . import alternating, paired  # noqa: F401 - register the methods' own steps
from .alternating import AlternatingStep, peer_networks
from .base import STEPS, EagerStep, GraphStep, make_step, run_kind
from .paired import PairedStep

__all__ = ["STEPS", "AlternatingStep", "EagerStep", "GraphStep", "PairedStep", "make_step", "peer_networks", "run_kind"]
