"""Methods as contracts: what a method requires, what it defaults, which options it reads, and the loss terms it
adds to the task's supervision, as data (``METHODS``).

A method is chosen by ``loss.mode`` and is also a ``dhm compare`` mode (one list). It declares

* **requirements**, never overridden: its branch ``layout`` and the layout families it accepts (``layouts``), the
  training ``sampler`` it needs, the ``tasks`` it supports and its ``step`` kind (``joint``, or a step of its own
  such as DML's ``alternating`` or CS-KD's ``pairs``, chosen from its options). A recipe or an override that
  contradicts one is refused in one line naming both sides (:mod:`dhm.config.resolve`);
* **what it reads**: the shared ``loss.*`` keys (``reads``) and its own options, a typed dataclass carried as
  ``loss.options.*`` (``options``); a key it does not read, given as an override, is refused;
* **soft defaults** (``defaults``: keys it fills where the recipe and the overrides are silent, e.g. DKS's T = 1)
  and, for a **variant** of another method (``base``), the ``settings`` that define it (they replace a recipe's
  values; an override of one of them tunes the variant);
* **supervision**: the heads the task supervises (``supervise``: ``all``, ``main``) or ``none`` when the method
  replaces the supervision with its own (PS-KD, CS-KD, BYOT, OKDDip); the task supplies the terms
  (classification: cross-entropy; retrieval: cross-entropy + triplet (+ center)), the method's ``terms`` add to them.

This package is pure data (no torch): the config layer resolves a method, the engine turns its term specs into loss
modules. Add a method with ``METHODS.register("name")(Method(...))``; a plugin module does the same
(docs/architecture.md). ``core`` holds the classes, plain training, deep supervision and DHM with its variants;
``siblings`` DHM's sibling methods.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from ..registry import Registry


@dataclass(frozen=True)
class TermSpec:
    """One loss term of a method: a registered term name and its keyword options."""

    term: str
    options: dict[str, Any] = field(default_factory=dict)


def _nothing(epochs: int) -> dict[str, Any]:
    return {}


def _no_terms(loss: Any) -> list[TermSpec]:
    return []


#: the ``loss.*`` keys several methods read; every other method option lives in ``loss.options.*``
SHARED_KEYS = (
    "alpha",
    "temperature",
    "t2",
    "detach",
    "eps",
    "dynamic",
    "rampup_epochs",
    "rampup",
    "rampup_per",
    "label_smoothing",
)
#: what DHM's pairwise mimicking reads
PAIR_KEYS = ("alpha", "temperature", "t2", "detach", "eps", "dynamic", "rampup_epochs", "rampup", "rampup_per")
ANY_HEADS = ("paper", "list", "light-every-stage", "peers", "byot")  # layouts whose heads are plain classifiers
TASKS_ALL = ("classification", "retrieval")


@dataclass(frozen=True)
class Method:
    """A method's contract and its loss terms (see the module docstring)."""

    terms: Callable[[Any], list[TermSpec]] = _no_terms  # (the run's LossConfig) -> the terms it adds
    layout: str = "paper"  # the branch layout it trains by default ("none": the plain backbone)
    layouts: tuple[str, ...] = ()  # layout families it accepts (default: the family of ``layout``); "list": specs
    supervise: str = "all"  # heads the task supervises: all | main | none (the method replaces the supervision)
    sampler: str = ""  # the training sampler it requires ("" = the task's)
    tasks: tuple[str, ...] = ("classification",)
    reads: tuple[str, ...] = ()  # the shared loss keys it reads (SHARED_KEYS)
    options: type | None = None  # the dataclass of its own options, loss.options.*
    step: Callable[[Any], str] = lambda options: "joint"  # (its options) -> the step kind (dhm.engine.STEPS)
    # (its options) -> the branches' learning-rate multiplier and its decay (dhm.engine.optim.BRANCH_DECAYS)
    branch_lr: Callable[[Any], tuple[float, str]] = lambda options: (1.0, "none")
    defaults: Callable[[int], dict[str, Any]] = _nothing  # train.epochs -> {dotted key: value}, soft
    settings: Callable[[int], dict[str, Any]] = _nothing  # a variant's defining settings (replace a recipe's)
    base: str = ""  # the method a variant is of
    doc: str = ""
    alias_of: str = ""  # an older name of another method

    def __post_init__(self) -> None:
        if self.supervise not in ("all", "main", "none"):
            raise ValueError(f"a method supervises 'all', 'main' or 'none' heads, got {self.supervise!r}")
        unknown = set(self.reads) - set(SHARED_KEYS)
        if unknown:
            raise ValueError(f"a method reads shared loss keys ({', '.join(SHARED_KEYS)}); {sorted(unknown)} are not")

    @property
    def branches(self) -> str:
        """``none`` for a method on the plain backbone, else ``branched``."""
        return "none" if self.layout == "none" else "branched"

    def accepts(self) -> tuple[str, ...]:
        """The layout families this method trains on."""
        return self.layouts or (layout_family(self.layout),)


def layout_family(value: Any) -> str:
    """The family of a ``model.branches`` value: ``list`` for branch specs, else the name before ``:``."""
    return "list" if isinstance(value, (list, tuple)) else str(value).partition(":")[0]


METHODS: Registry[Method] = Registry("method")


def pair_kl(loss: Any, **fixed: Any) -> TermSpec:
    """DHM's pairwise mimicking over every ordered head pair with the run's shared keys and ``fixed`` options."""
    keys = {k: getattr(loss, k) for k in PAIR_KEYS}
    return TermSpec("pair_kl", {"graph": "all", **keys, **fixed})


def variant(base: str, settings: Callable[[int], dict[str, Any]], doc: str) -> Method:
    """A variant of the registered method ``base``: the same contract and terms with its defining ``settings``."""
    return replace(METHODS.get(base), settings=settings, base=base, doc=doc)


def gentle(epochs: int) -> dict[str, Any]:
    """Mimicking at half weight, ramped up with a sigmoid over the first half of the run (``dhm-gentle``,
    ``loss.preset=gentle``): chosen on validation by benchmarks/never_hurts.sh, RESULTS.md."""
    return {"loss.alpha": 0.5, "loss.rampup": "sigmoid", "loss.rampup_epochs": max(1, epochs // 2)}


METHODS.register("ce")(
    Method(layout="none", supervise="main", tasks=TASKS_ALL, reads=("label_smoothing",), doc="plain training")
)
METHODS.register("ls")(
    Method(
        layout="none",
        supervise="main",
        reads=("label_smoothing",),
        defaults=lambda e: {"loss.label_smoothing": 0.1},
        doc="plain training with label smoothing 0.1",
    )
)
METHODS.register("dsl")(
    Method(layouts=ANY_HEADS, tasks=TASKS_ALL, reads=("label_smoothing",), doc="deep supervision: every head")
)
METHODS.register("dhm")(
    Method(
        lambda loss: [pair_kl(loss)],
        layouts=ANY_HEADS,
        tasks=TASKS_ALL,
        reads=SHARED_KEYS,
        doc="DHM: every head supervised + pairwise KL over every ordered head pair, teacher detached",
    )
)
for _name, _settings, _doc in (
    ("dhm-released", lambda e: {"loss.dynamic": "released"}, "DHM with the released code's stochastic pair law"),
    ("dhm-bernoulli", lambda e: {"loss.dynamic": "bernoulli(0.5)"}, "DHM, each pair gradient stopped w.p. 0.5"),
    ("dhm-fork", lambda e: {"model.dynamic_fork": True}, "DHM, stochastic fork point"),
    (
        "dhm-rampup",
        lambda e: {"loss.rampup": "sigmoid", "loss.rampup_epochs": max(1, e // 4)},
        "DHM, mimicking ramped up with a sigmoid over the first quarter of the run",
    ),
    ("dhm-gentle", gentle, "DHM at alpha 0.5, sigmoid ramp-up over half the run (= loss.preset=gentle; RESULTS.md)"),
):
    METHODS.register(_name)(variant("dhm", _settings, _doc))
METHODS.register("dhm-official")(
    replace(METHODS.get("dhm-released"), alias_of="dhm-released", doc="old name of dhm-released")
)


def get_method(name: str) -> Method:
    """The method ``name`` (a one-line error with suggestions for an unknown one)."""
    return METHODS.get(name)


def list_methods(pattern: str = "*", aliases: bool = False) -> list[str]:
    """Registered method names (without the old names unless ``aliases``)."""
    return [n for n in METHODS.list(pattern) if aliases or not METHODS.get(n).alias_of]
