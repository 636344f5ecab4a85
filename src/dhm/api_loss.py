"""Any registered method's loss by name, for the Python API: ``dhm.MimicLoss(mode="dml")`` resolves the method
exactly as ``dhm train`` does (its requirements, variant settings and soft defaults; a key it does not read is
refused) and builds the task's supervision plus the method's terms."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .config import load_config
from .engine.build import make_term, term_specs
from .losses import Objective
from .losses.mimic import MimicLoss as PairMimicLoss

_SHARED = ("alpha", "temperature", "eps", "dynamic", "rampup_epochs", "rampup", "label_smoothing", "t2", "detach")


def _text(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, (list, dict)) else str(value)


class MimicLoss(Objective):
    """The loss of any method of ``dhm methods`` over a branched model's heads, as a parameter-free module (terms
    with parameters or memory, such as PS-KD's, are sized by ``num_classes`` and ``num_samples``).

    Args:
        mode: the method: ``ce``, ``dsl``, ``dhm``, ``dhm-gentle``, ``dml``, ``dks``, ``one``, ...
        alpha, temperature, eps, dynamic, rampup_epochs, rampup, label_smoothing, t2, detach, rampup_per: the shared
            ``loss.*`` keys; given, each must be one the method reads (``None``: the method's default).
        head_names: the model's head names (``model.head_names``); default ``main, head1, ...``.
        epochs: the run's length, for settings that scale with it (``dhm-gentle``'s ramp-up over half the run).
        task: ``classification`` (cross-entropy supervision) or ``retrieval`` (BoT's).
        options: the method's own options (``loss.options.*``), e.g. ``{"peer_update": "joint"}``.
        num_classes, num_samples: sizes of terms with parameters or memory.

    A ramped-up method must be told where training is: ``loss.set_progress(epoch)`` before every step, or
    ``progress=epoch`` in the call (else the first call raises).

    Example:
        >>> loss_fn = dhm.MimicLoss(mode="dhm")
        >>> out = loss_fn(model(images), labels)             # out["loss"].backward(); log the rest
        >>> gentle = dhm.MimicLoss(mode="dhm-gentle", epochs=30)
        >>> out = gentle(model(images), labels, progress=epoch + step / steps_per_epoch)
    """

    def __init__(
        self,
        mode: str = "dhm",
        alpha: float | None = None,
        temperature: float | None = None,
        eps: float | None = None,
        dynamic: str | None = None,
        rampup_epochs: float | None = None,
        rampup: str | None = None,
        head_names: Sequence[str] | None = None,
        label_smoothing: float | None = None,
        t2: bool | None = None,
        detach: bool | None = None,
        rampup_per: str | None = None,
        epochs: int = 10,
        task: str = "classification",
        options: Mapping[str, Any] | None = None,
        num_classes: int | None = None,
        num_samples: int | None = None,
    ) -> None:
        given = dict(zip(_SHARED, (alpha, temperature, eps, dynamic, rampup_epochs, rampup, label_smoothing, t2)))
        given["detach"], given["rampup_per"] = detach, rampup_per
        overrides = [f"loss.mode={mode}", f"train.epochs={epochs}", f"train.task={task}", "data.name=synthetic"]
        overrides += [f"loss.{key}={_text(value)}" for key, value in given.items() if value is not None]
        overrides += [f"loss.options.{key}={_text(value)}" for key, value in (options or {}).items()]
        self.config = load_config(None, overrides)
        sizes = {"num_classes": num_classes, "num_samples": num_samples, "epochs": epochs, "dims": ()}
        names = tuple(head_names) if head_names is not None else None
        super().__init__([make_term(spec, names, sizes) for spec in term_specs(self.config)], head_names)
        loss = self.config.loss
        self.mode, self.alpha, self.temperature, self.eps = mode, loss.alpha, loss.temperature, loss.eps
        self.label_smoothing, self.rampup_epochs, self.rampup = loss.label_smoothing, loss.rampup_epochs, loss.rampup


__all__ = ["MimicLoss", "PairMimicLoss"]
