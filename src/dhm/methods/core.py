"""Methods: a branch policy plus a list of loss terms over the model's named outputs, as data (``METHODS``).

A method is chosen by ``loss.mode`` and is also a ``dhm compare`` mode (one list). It says

* ``branches``: ``none`` (the plain backbone) or ``recipe`` (the branches of ``model.branches``);
* ``terms``: the loss terms (:mod:`dhm.losses.terms`, by registered name) and their options, from the run's
  ``loss.*`` config;
* ``settings``: config keys it sets, given ``train.epochs`` (``ls`` sets ``loss.label_smoothing=0.1``); they fill
  keys a recipe or an override did not set, and ``dhm compare`` gives them explicitly.

This package is pure data (no torch): the config layer reads it to resolve a method's settings, the engine turns
its term specs into loss modules. Add a method with ``METHODS.register("name")(Method(...))``. ``core`` holds the
classes, plain training, deep supervision and DHM; ``siblings`` DHM's sibling methods; ``reid`` the re-ID ones.
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


def _no_settings(epochs: int) -> dict[str, Any]:
    return {}


@dataclass(frozen=True)
class Method:
    """A branch policy and the loss terms over the model's named outputs (see the module docstring)."""

    terms: Callable[[Any], list[TermSpec]]  # (the run's LossConfig) -> its term specs
    branches: str = "recipe"  # none | recipe
    settings: Callable[[int], dict[str, Any]] = _no_settings  # train.epochs -> {dotted key: value}
    doc: str = ""
    alias_of: str = ""  # an older name of another method

    def __post_init__(self) -> None:
        if self.branches not in ("none", "recipe"):
            raise ValueError(f"a method's branches are 'none' or 'recipe', got {self.branches!r}")


METHODS: Registry[Method] = Registry("method")


def ce_terms(loss: Any, heads: str = "main") -> list[TermSpec]:
    """Cross-entropy on ``heads`` with the run's label smoothing."""
    return [TermSpec("ce", {"heads": heads, "label_smoothing": loss.label_smoothing})]


def dhm_terms(loss: Any) -> list[TermSpec]:
    """DHM: cross-entropy on every head plus mimicking over every ordered head pair, teacher detached."""
    kl = {
        "graph": "all",
        "alpha": loss.alpha,
        "temperature": loss.temperature,
        "eps": loss.eps,
        "dynamic": loss.dynamic,
        "rampup_epochs": loss.rampup_epochs,
        "rampup": loss.rampup,
    }
    return [*ce_terms(loss, "all"), TermSpec("pair_kl", kl)]


def _method(name: str, terms: Callable, branches: str = "recipe", settings: Callable = _no_settings, doc: str = ""):
    METHODS.register(name)(Method(terms, branches, settings, doc))


_method("ce", ce_terms, "none", doc="plain training: the backbone alone, cross-entropy")
_method("ls", ce_terms, "none", lambda e: {"loss.label_smoothing": 0.1}, "plain training with label smoothing 0.1")
_method("dsl", lambda loss: ce_terms(loss, "all"), doc="deep supervision: the branches, cross-entropy on every head")
_method("dhm", dhm_terms, doc="DHM: cross-entropy on every head + pairwise mimicking (loss.* as configured)")
_method(
    "dhm-released",
    dhm_terms,
    settings=lambda e: {"loss.dynamic": "released"},
    doc="DHM with the released code's stochastic pair-gradient law",
)
_method(
    "dhm-bernoulli",
    dhm_terms,
    settings=lambda e: {"loss.dynamic": "bernoulli(0.5)"},
    doc="DHM, each pair gradient stopped with probability 0.5",
)
_method("dhm-fork", dhm_terms, settings=lambda e: {"model.dynamic_fork": True}, doc="DHM, stochastic fork point")
_method(
    "dhm-rampup",
    dhm_terms,
    settings=lambda e: {"loss.rampup": "sigmoid", "loss.rampup_epochs": max(1, e // 4)},
    doc="DHM, mimicking ramped up with a sigmoid over the first quarter of the run",
)
_method(
    "dhm-gentle",
    dhm_terms,
    settings=lambda e: {"loss.preset": "gentle"},
    doc="DHM with loss.preset=gentle (alpha 0.5, sigmoid ramp-up over half the run; RESULTS.md)",
)


METHODS.register("dhm-official")(  # the older name: the same method, marked as an alias
    replace(METHODS.get("dhm-released"), doc="old name of dhm-released", alias_of="dhm-released")
)


def suffix_method(suffix: str, task: str | None) -> str:
    """The method a setup recipe's name suffix means: in a re-ID setup (``train.task: retrieval``) ``_dsl`` and
    ``_dhm`` are the re-ID methods ``bot-dsl`` and ``bot-dhm`` (``market1501/resnet50_dhm``), elsewhere the method
    of that name."""
    reid = f"bot-{suffix}"
    return reid if task == "retrieval" and reid in METHODS else suffix


def get_method(name: str) -> Method:
    """The method ``name`` (a one-line error with suggestions for an unknown one)."""
    return METHODS.get(name)


def list_methods(pattern: str = "*", aliases: bool = False) -> list[str]:
    """Registered method names (without the old names unless ``aliases``)."""
    return [n for n in METHODS.list(pattern) if aliases or not METHODS.get(n).alias_of]
