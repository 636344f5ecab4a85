"""DHM's sibling methods (docs/method.md section 8): DSN, DKS, DML, ONE, OKDDip, BYOT, CS-KD and PS-KD, each a
branch layout (``model.branches``) and loss terms with its authors' defaults as settings."""

from __future__ import annotations

from typing import Any

from .core import TermSpec, _method, ce_terms


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
    lambda e: {"data.sampler": "class_pairs", "loss.temperature": 4.0, "loss.partner_forward": "separate"},
    "CS-KD (Yun et al. 2020): anchor + same-class partner per pair (data.sampler=class_pairs), CE + T^2 KL at T=4",
)
_method(
    "pskd",
    lambda loss: [TermSpec("pskd", {"alpha": loss.self_alpha})],
    "none",
    doc="PS-KD (Kim et al. 2021): targets mixed with last epoch's own predictions, weight rising linearly to 0.8",
)
