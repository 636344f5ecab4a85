"""DHM's sibling methods (docs/method.md section 8): DSN, DKS, DML, ONE, OKDDip, BYOT, CS-KD and PS-KD, each a
required branch layout, its own options (``loss.options.*``) and loss terms, with its authors' defaults."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError
from .core import ANY_HEADS, METHODS, PAIR_KEYS, Method, TermSpec, pair_kl


def _check(ok: bool, key: str, words: str, value: Any) -> None:
    if not ok:
        raise ConfigError(f"loss.options.{key} must be {words}, got {value!r}")


@dataclass
class DSNOptions:
    aux_weight: float | list[float] = 1.0  # weight of the auxiliary heads' CE at the start (or one per head)
    aux_decay: str = "linear"  # linear (to 0 at aux_stop) | none (constant until aux_stop)
    aux_stop: float = 0.0  # epoch after which the auxiliary terms stop (0 = the end of the run)

    def __post_init__(self) -> None:
        weights = self.aux_weight if isinstance(self.aux_weight, list) else [self.aux_weight]
        _check(all(w >= 0 for w in weights), "aux_weight", ">= 0", self.aux_weight)
        _check(self.aux_stop >= 0, "aux_stop", ">= 0 (0 = the end of the run)", self.aux_stop)


@dataclass
class DMLOptions:
    peer_update: str = "joint"  # joint (all peers in one step) | alternating (one after another, the paper)

    def __post_init__(self) -> None:
        _check(self.peer_update in ("joint", "alternating"), "peer_update", "joint or alternating", self.peer_update)


@dataclass
class BYOTOptions:
    hint_weight: float = 0.03  # lambda of the feature hint (0 = off)

    def __post_init__(self) -> None:
        _check(self.hint_weight >= 0, "hint_weight", ">= 0 (0 = off)", self.hint_weight)


@dataclass
class CSKDOptions:
    weight: float = 1.0  # lambda of the class-wise KL term
    partner_forward: str = "separate"  # separate (partners in a no-grad forward, as the authors) | shared

    def __post_init__(self) -> None:
        _check(self.weight >= 0, "weight", ">= 0", self.weight)
        ok = self.partner_forward in ("shared", "separate")
        _check(ok, "partner_forward", "shared or separate", self.partner_forward)


@dataclass
class PSKDOptions:
    final_alpha: float = 0.8  # the weight of last epoch's predictions in the targets at the last epoch
    memory: str = "float32"  # the per-sample memory: float32 (the authors') | float16 (half the memory)

    def __post_init__(self) -> None:
        _check(0 <= self.final_alpha <= 1, "final_alpha", "in [0, 1]", self.final_alpha)
        _check(self.memory in ("float32", "float16"), "memory", "float32 or float16", self.memory)


def _dsn(loss: Any) -> list[TermSpec]:
    o = loss.options
    return [TermSpec("ce_aux", {"weight": o.aux_weight, "decay": o.aux_decay, "stop": o.aux_stop})]


PAPER_PAIRS = {"loss.temperature": 1.0, "loss.t2": False, "loss.eps": 0.0}
ONE_RAMP = {"loss.rampup": "sigmoid"}

METHODS.register("dsn")(
    Method(
        _dsn,
        layout="light-every-stage",
        layouts=("light-every-stage", "list"),
        supervise="main",
        options=DSNOptions,
        reads=("label_smoothing",),
        defaults=lambda e: {"loss.options.aux_stop": float(e)},
        doc="DSN (Lee et al. 2015): light classifiers after every stage, their CE weight decaying to 0 over the run",
    )
)
METHODS.register("dks")(
    Method(
        lambda loss: [pair_kl(loss)],
        layouts=ANY_HEADS,
        tasks=("classification", "retrieval"),
        reads=(*PAIR_KEYS, "label_smoothing"),
        defaults=lambda e: {**PAPER_PAIRS, "loss.eps": 1e-8},  # the authors' smoothing (KL_divergence.py)
        doc="DKS (Sun et al. 2019): CE on every head + KL over all ordered head pairs, T=1, no T^2, teacher detached",
    )
)
METHODS.register("dml")(
    Method(
        lambda loss: [pair_kl(loss, per_student=True)],
        layout="peers:2",
        options=DMLOptions,
        reads=(*PAIR_KEYS, "label_smoothing"),
        step=lambda o: o.peer_update if o.peer_update == "alternating" else "joint",
        defaults=lambda e: dict(PAPER_PAIRS),
        doc="DML (Zhang et al. 2018): K full networks (model.branches=peers:K), each CE + mean KL to the others",
    )
)
METHODS.register("one")(
    Method(
        lambda loss: [pair_kl(loss, graph="gate-teaches")],
        layout="one:3",
        reads=(*PAIR_KEYS, "label_smoothing"),
        defaults=lambda e: {"loss.temperature": 3.0, "loss.eps": 0.0, **ONE_RAMP, "loss.rampup_epochs": e * 80 / 300},
        doc="ONE (Lan et al. 2018): 3 gated branches; CE on each and on the gated ensemble + T^2 KL(ensemble || each)",
    )
)
METHODS.register("okddip")(
    Method(
        lambda loss: [
            TermSpec(
                "okddip", {k: getattr(loss, k) for k in ("temperature", "detach", "rampup_epochs", "rampup", "t2")}
            )
        ],
        layout="okddip:3",
        supervise="none",
        reads=("temperature", "detach", "rampup_epochs", "rampup", "t2"),
        defaults=lambda e: {
            "loss.temperature": 3.0,
            "loss.detach": False,
            **ONE_RAMP,
            "loss.rampup_epochs": e * 80 / 300,
        },
        doc="OKDDip (Chen et al. 2020): 3 peers learn from attention-mixed peer targets, the leader from the peer mean",
    )
)
METHODS.register("byot")(
    Method(
        lambda loss: [
            TermSpec(
                "byot",
                {
                    "alpha": loss.alpha,
                    "temperature": loss.temperature,
                    "hint": loss.options.hint_weight,
                    "t2": loss.t2,
                    "detach": loss.detach,
                },
            )
        ],
        layout="byot",
        supervise="none",
        options=BYOTOptions,
        reads=("alpha", "temperature", "t2", "detach"),
        defaults=lambda e: {"loss.alpha": 0.3, "loss.temperature": 3.0},
        doc="BYOT (Zhang et al. 2019): a head after every stage, the deepest teaches: (1-a) CE + a T^2 KL + feature hint",
    )
)
METHODS.register("cskd")(
    Method(
        lambda loss: [
            TermSpec(
                "cskd",
                {"weight": loss.options.weight, "temperature": loss.temperature, "t2": loss.t2, "detach": loss.detach},
            )
        ],
        layout="none",
        supervise="none",
        sampler="class_pairs",
        options=CSKDOptions,
        reads=("temperature", "t2", "detach"),
        step=lambda o: "pairs" if o.partner_forward == "separate" else "joint",
        defaults=lambda e: {"loss.temperature": 4.0},
        doc="CS-KD (Yun et al. 2020): anchor + same-class partner per pair (the class_pairs sampler), CE + T^2 KL at T=4",
    )
)
METHODS.register("pskd")(
    Method(
        lambda loss: [TermSpec("pskd", {"alpha": loss.options.final_alpha, "memory": loss.options.memory})],
        layout="none",
        supervise="none",
        options=PSKDOptions,
        doc="PS-KD (Kim et al. 2021): targets mixed with last epoch's own predictions, weight rising linearly to 0.8",
    )
)
