"""Methods: a branch policy plus a list of loss terms over the model's named outputs, as data (``METHODS``).

A method is chosen by ``loss.mode`` and is also a ``dhm compare`` mode (one list). It says

* ``branches``: ``none`` (the plain backbone) or ``recipe`` (the branches of ``model.branches``);
* ``terms``: the loss terms (:mod:`dhm.losses.terms`, by registered name) and their options, from the run's
  ``loss.*`` config;
* ``settings``: config keys it sets, given ``train.epochs`` (``ls`` sets ``loss.label_smoothing=0.1``); they fill
  keys a recipe or an override did not set, and ``dhm compare`` gives them explicitly.

This module is pure data (no torch): the config layer reads it to resolve a method's settings, the engine turns
its term specs into loss modules. Add a method with ``METHODS.register("name")(Method(...))``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from .registry import Registry


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


def pair_terms(loss: Any, **fixed: Any) -> list[TermSpec]:
    """Cross-entropy on every head plus a pair-KL term over every ordered pair with the run's switches
    (``loss.temperature``, ``loss.t2``, ``loss.detach``, ``loss.alpha``) and ``fixed`` options."""
    kl = {
        "graph": "all",
        "alpha": loss.alpha,
        "temperature": loss.temperature,
        "t2": loss.t2,
        "detach": loss.detach,
        "eps": loss.eps,
        "rampup_epochs": loss.rampup_epochs,
        "rampup": loss.rampup,
        **fixed,
    }
    return [*ce_terms(loss, "all"), TermSpec("pair_kl", kl)]


def dsn_terms(loss: Any) -> list[TermSpec]:
    """DSN: cross-entropy on the main head plus the companion objectives on the auxiliary heads, their weight
    decaying to 0 at ``loss.aux_stop``."""
    aux = {"weight": loss.aux_weight, "decay": loss.aux_decay, "stop": loss.aux_stop}
    return [*ce_terms(loss, "main"), TermSpec("ce_aux", aux)]


_method(
    "dsn",
    dsn_terms,
    settings=lambda e: {"model.branches": "light-every-stage", "loss.aux_stop": float(e)},
    doc="DSN (Lee et al. 2015): light classifiers after every stage, their CE weight decaying to 0 over the run",
)
_method(
    "dks",
    pair_terms,
    settings=lambda e: {"loss.temperature": 1.0, "loss.t2": False, "loss.eps": 0.0},
    doc="DKS (Sun et al. 2019): CE on every head + KL over all ordered head pairs, T=1, no T^2, teacher detached",
)
_method(
    "dml",
    lambda loss: pair_terms(loss, per_student=True),
    settings=lambda e: {"model.branches": "peers:2", "loss.temperature": 1.0, "loss.t2": False, "loss.eps": 0.0},
    doc="DML (Zhang et al. 2018): K full networks (model.branches=peers:K), each CE + mean KL to the others",
)


_method(
    "one",
    lambda loss: pair_terms(loss, graph="gate-teaches"),
    settings=lambda e: {
        "model.branches": "one:3",
        "loss.temperature": 3.0,
        "loss.eps": 0.0,
        "loss.rampup": "sigmoid",
        "loss.rampup_epochs": e * 80 / 300,
    },
    doc="ONE (Lan et al. 2018): 3 gated branches; CE on each and on the gated ensemble + T^2 KL(ensemble || each)",
)
_method(
    "okddip",
    lambda loss: [
        TermSpec(
            "okddip",
            {
                "temperature": loss.temperature,
                "detach": loss.detach,
                "rampup_epochs": loss.rampup_epochs,
                "rampup": loss.rampup,
                "t2": loss.t2,
            },
        )
    ],
    settings=lambda e: {
        "model.branches": "okddip:3",
        "loss.temperature": 3.0,
        "loss.detach": False,
        "loss.rampup": "sigmoid",
        "loss.rampup_epochs": e * 80 / 300,
    },
    doc="OKDDip (Chen et al. 2020): 3 peers learn from attention-mixed peer targets, the leader from the peer mean",
)
_method(
    "byot",
    lambda loss: [
        TermSpec(
            "byot",
            {
                "alpha": loss.alpha,
                "temperature": loss.temperature,
                "hint": loss.hint_weight,
                "t2": loss.t2,
                "detach": loss.detach,
            },
        )
    ],
    settings=lambda e: {"model.branches": "byot", "loss.alpha": 0.3, "loss.temperature": 3.0},
    doc="BYOT (Zhang et al. 2019): a head after every stage, the deepest teaches: (1-a) CE + a T^2 KL + feature hint",
)
_method(
    "cskd",
    lambda loss: [
        TermSpec(
            "cskd",
            {"weight": loss.self_weight, "temperature": loss.temperature, "t2": loss.t2, "detach": loss.detach},
        )
    ],
    "none",
    lambda e: {"data.sampler": "class_pairs", "loss.temperature": 4.0},
    "CS-KD (Yun et al. 2020): anchor + same-class partner per pair (data.sampler=class_pairs), CE + T^2 KL at T=4",
)
_method(
    "pskd",
    lambda loss: [TermSpec("pskd", {"alpha": loss.self_alpha})],
    "none",
    doc="PS-KD (Kim et al. 2021): targets mixed with last epoch's own predictions, weight rising linearly to 0.8",
)


def bot_terms(loss: Any, heads: str = "main", mimic: bool = False, embed: bool = False) -> list[TermSpec]:
    """The re-ID strong baseline (BoT) on ``heads``: identity cross-entropy (label smoothing) + batch-hard triplet
    (+ center loss with ``loss.center_weight > 0``); with ``mimic`` DHM's pairwise KL on the identity logits, with
    ``embed`` embedding mimicking."""
    terms = [
        *ce_terms(loss, heads),
        TermSpec("triplet", {"heads": heads, "margin": loss.margin, "weight": loss.triplet_weight}),
    ]
    if mimic:
        terms.append(dhm_terms(loss)[-1])
    if embed:
        terms.append(TermSpec("pair_dist", {"graph": "all", "weight": loss.embed_weight}))
    if loss.center_weight > 0:
        terms.append(TermSpec("center", {"heads": heads, "weight": loss.center_weight, "lr": loss.center_lr}))
    return terms


def _bot_settings(epochs: int) -> dict[str, Any]:
    return {"loss.label_smoothing": 0.1}


_method(
    "bot", bot_terms, "none", _bot_settings, "re-ID strong baseline: identity CE (smoothing 0.1) + batch-hard triplet"
)
_method("bot-dsl", lambda loss: bot_terms(loss, "all"), settings=_bot_settings, doc="bot on every head, no mimicking")
_method(
    "bot-dhm",
    lambda loss: bot_terms(loss, "all", mimic=True),
    settings=_bot_settings,
    doc="bot on every head + DHM's pairwise KL on the identity logits",
)
_method(
    "bot-dhm-gentle",
    lambda loss: bot_terms(loss, "all", mimic=True),
    settings=lambda e: {**_bot_settings(e), "loss.preset": "gentle"},
    doc="bot-dhm with loss.preset=gentle (alpha 0.5, sigmoid ramp-up over half the run)",
)
_method(
    "bot-dhm-emb",
    lambda loss: bot_terms(loss, "all", mimic=True, embed=True),
    settings=_bot_settings,
    doc="bot-dhm + embedding mimicking (the heads' in-batch distance matrices, teacher detached)",
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
