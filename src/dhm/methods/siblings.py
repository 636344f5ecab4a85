"""DHM's sibling methods (docs/method.md section 8): DSN, DKS, DML, ONE, OKDDip, BYOT, CS-KD and PS-KD, each a
required branch layout, its own options (``loss.options.*``) and loss terms, with its authors' defaults."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError
from .core import ANY_HEADS, METHODS, PAIR_KEYS, Method, TermSpec, pair_kl

PEER_UPDATES = ("alternating", "alternating-one-batch", "joint")


def _check(ok: bool, key: str, words: str, value: Any) -> None:
    if not ok:
        raise ConfigError(f"loss.options.{key} must be {words}, got {value!r}")


@dataclass
class DSNOptions:
    aux_weight: float | list[float] = 1.0  # weight of the auxiliary heads' loss at the start (or one per head)
    aux_decay: str = "linear"  # linear (to 0 at aux_stop) | none (constant until aux_stop)
    aux_stop: float = 0.0  # epoch after which the auxiliary terms stop (0 = the end of the run)
    aux_lr: float = 1.0  # the companions' learning rate, times optim.lr (DSN's authors: 0.001)
    aux_lr_decay: str = "none"  # none | power_inv: times (1 + 1e-4 step)^-0.75 (DSN's authors' companions)

    def __post_init__(self) -> None:
        weights = self.aux_weight if isinstance(self.aux_weight, list) else [self.aux_weight]
        _check(all(w >= 0 for w in weights), "aux_weight", ">= 0", self.aux_weight)
        _check(self.aux_stop >= 0, "aux_stop", ">= 0 (0 = the end of the run)", self.aux_stop)
        _check(self.aux_lr > 0, "aux_lr", "> 0", self.aux_lr)
        _check(self.aux_lr_decay in ("none", "power_inv"), "aux_lr_decay", "none or power_inv", self.aux_lr_decay)


@dataclass
class DMLOptions:
    # alternating: the authors' (each peer steps on a mini-batch of its own: the step's batch cut in K) |
    # alternating-one-batch: the paper's Algorithm 1 (every peer steps on the same batch) | joint: one step for all
    peer_update: str = "alternating"
    kl_reduce: str = "sum"  # sum over a peer's K - 1 teachers (the authors' code) | mean (the paper's 1 / (K - 1))

    def __post_init__(self) -> None:
        ok = self.peer_update in PEER_UPDATES
        _check(ok, "peer_update", " or ".join(PEER_UPDATES), self.peer_update)
        _check(self.kl_reduce in ("sum", "mean"), "kl_reduce", "sum or mean", self.kl_reduce)


@dataclass
class OKDDipOptions:
    mix: str = "logits"  # logits (the authors': t_a = softmax(sum_b alpha_ab z_b / T)) | probabilities (dhm's former)

    def __post_init__(self) -> None:
        _check(self.mix in ("logits", "probabilities"), "mix", "logits or probabilities", self.mix)


@dataclass
class BYOTOptions:
    hint_weight: float = 0.03  # lambda of the feature hint (0 = off)
    hint_all: bool = False  # the hint for every shallow head (dhm's former form); the authors skip the deepest one

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


def _dsn_authors(loss: Any) -> list[TermSpec]:
    o = loss.options
    return [
        TermSpec("squared_hinge", {"heads": "main"}),
        TermSpec("ce_aux", {"weight": o.aux_weight, "decay": o.aux_decay, "stop": o.aux_stop, "loss": "squared_hinge"}),
    ]


def _aux_lr(options: Any) -> tuple[float, str]:
    return options.aux_lr, options.aux_lr_decay


PAPER_PAIRS = {"loss.temperature": 1.0, "loss.t2": False, "loss.eps": 0.0}
ONE_RAMP = {"loss.rampup": "sigmoid", "loss.rampup_per": "epoch"}  # ONE's and OKDDip's: set once per epoch

METHODS.register("dsn")(
    Method(
        _dsn,
        layout="light-every-stage",
        layouts=("light-every-stage", "linear-every-stage", "list"),
        supervise="main",
        options=DSNOptions,
        reads=("label_smoothing",),
        branch_lr=_aux_lr,
        defaults=lambda e: {"loss.options.aux_stop": float(e)},
        doc="DSN as the DHM and DKS papers run it: light conv classifiers after every stage, their CE weight "
        "decaying to 0 over the run",
    )
)
METHODS.register("dsn-authors")(
    Method(
        _dsn_authors,
        layout="linear-every-stage",
        layouts=("linear-every-stage", "light-every-stage", "list"),
        supervise="none",
        options=DSNOptions,
        branch_lr=_aux_lr,
        settings=lambda e: {
            "loss.options.aux_decay": "none",
            "loss.options.aux_stop": e / 4,
            "loss.options.aux_lr": 0.001,
            "loss.options.aux_lr_decay": "power_inv",
        },
        doc="DSN (Lee et al. 2015) as its authors' code: squared hinge on every head, linear companions on the "
        "unpooled maps at 0.001x lr, dropped after a quarter of the run",
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
        lambda loss: [
            pair_kl(loss, per_student=loss.options.kl_reduce == "mean", smoothing="ratio"),
        ],
        layout="peers:2",
        options=DMLOptions,
        reads=(*PAIR_KEYS, "label_smoothing"),
        step=lambda o: "joint" if o.peer_update == "joint" else o.peer_update,
        defaults=lambda e: {**PAPER_PAIRS, "loss.eps": 1e-8},  # the authors' kl_loss_compute smoothing
        doc="DML (Zhang et al. 2018): K full networks (model.branches=peers:K), each CE + KL to the others, "
        "each stepping on its own mini-batch",
    )
)
METHODS.register("one")(
    Method(
        lambda loss: [pair_kl(loss, graph="gate-teaches", smoothing="teacher")],
        layout="one:3",
        reads=(*PAIR_KEYS, "label_smoothing"),
        defaults=lambda e: {"loss.temperature": 3.0, "loss.eps": 1e-7, **ONE_RAMP, "loss.rampup_epochs": e * 80 / 300},
        doc="ONE (Lan et al. 2018): 3 gated branches; CE on each and on the gated ensemble + T^2 KL(ensemble || each)",
    )
)
OKDDIP_KEYS = ("alpha", "temperature", "detach", "eps", "rampup_epochs", "rampup", "rampup_per", "t2")
METHODS.register("okddip")(
    Method(
        lambda loss: [TermSpec("okddip", {**{k: getattr(loss, k) for k in OKDDIP_KEYS}, "mix": loss.options.mix})],
        layout="okddip:3",
        supervise="none",
        options=OKDDipOptions,
        reads=OKDDIP_KEYS,
        defaults=lambda e: {
            "loss.alpha": 1.0,
            "loss.temperature": 3.0,
            "loss.detach": False,
            "loss.eps": 1e-7,
            **ONE_RAMP,
            "loss.rampup_epochs": e * 80 / 300,
        },
        doc="OKDDip (Chen et al. 2020): 3 peers learn from attention-mixed peer logits, the leader from their mean",
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
                    "hint_all": loss.options.hint_all,
                    "t2": loss.t2,
                    "detach": loss.detach,
                },
            )
        ],
        layout="byot",
        supervise="none",
        options=BYOTOptions,
        reads=("alpha", "temperature", "t2", "detach"),
        defaults=lambda e: {"loss.alpha": 0.3, "loss.temperature": 3.0, "loss.t2": False},  # no T^2: train.py
        doc="BYOT (Zhang et al. 2019): a head after every stage, the deepest teaches: (1-a) CE + a soft CE + feature hint",
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
