"""Range checks of every numeric config value, in one table, run when a config is loaded (before anything is
built): finite numbers, positive sizes, probabilities in [0, 1). Each failure is one ConfigError line."""

from __future__ import annotations

import dataclasses
import math
import operator
import re
from collections.abc import Callable
from typing import Any

from ..errors import ConfigError

Check = tuple[Callable[[Any, Any], bool], Any, str]
GT, GE, LT, LE = operator.gt, operator.ge, operator.lt, operator.le

#: key -> checks (comparison, bound, words); ``None`` values (where the schema allows them) are not checked.
RULES: dict[str, tuple[Check, ...]] = {
    "model.num_classes": ((GE, 1, ">= 1"),),
    "model.in_channels": ((GE, 1, ">= 1"),),
    "model.dropout": ((GE, 0, ">= 0"), (LT, 1, "< 1")),
    "model.widths": ((GE, 1, "positive channel counts"),),
    "loss.alpha": ((GE, 0, ">= 0"),),
    "loss.temperature": ((GT, 0, "> 0"),),
    "loss.eps": ((GE, 0, ">= 0 (0 = exact log-softmax)"), (LT, 1, "< 1")),
    "loss.rampup_epochs": ((GE, 0, ">= 0"),),
    "loss.label_smoothing": ((GE, 0, ">= 0"), (LT, 1, "< 1")),
    "data.val_size": ((GE, 0, ">= 0"),),
    "data.pad": ((GE, 0, ">= 0"),),
    "data.split_seed": ((GE, 0, ">= 0"),),
    "data.train_subset": ((GE, 0, ">= 0 (0 = all)"),),
    "data.batch_size": ((GE, 1, ">= 1"),),
    "data.eval_batch_size": ((GE, 1, ">= 1"),),
    "data.workers": ((GE, 0, ">= 0"),),
    "data.image_size": ((GE, 1, ">= 1 (or null for the native size)"), (LE, 16384, "<= 16384 pixels a side")),
    "data.options.train_size": ((GE, 1, ">= 1"),),
    "data.options.test_size": ((GE, 1, ">= 1"),),
    "data.options.num_classes": ((GE, 2, ">= 2"),),
    "optim.lr": ((GT, 0, "> 0"),),
    "optim.momentum": ((GE, 0, ">= 0"), (LT, 1, "< 1")),
    "optim.weight_decay": ((GE, 0, ">= 0"),),
    "optim.milestones": ((GE, 0, "epochs >= 0"),),
    "optim.gamma": ((GT, 0, "> 0"),),
    "optim.warmup_epochs": ((GE, 0, ">= 0"),),
    "optim.min_lr": ((GE, 0, ">= 0"),),
    "train.epochs": ((GE, 1, ">= 1"),),
    "train.seed": ((GE, 0, ">= 0"),),
    "train.accum_steps": ((GE, 1, ">= 1"),),
    "train.log_every_s": ((GE, 0, ">= 0"),),
    "train.limit_batches": ((GE, 0, ">= 0 (0 = all)"),),
    "train.keep_every": ((GE, 0, ">= 0 (0 = none)"),),
    "train.threads": ((GE, 0, ">= 0 (0 = torch's default)"),),
}

#: keys that take the string ``auto`` or a number
AUTO_KEYS = ("data.workers", "train.threads")


def _leaves(obj: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            out.update(_leaves(value, f"{prefix}{f.name}."))
        else:
            out[f"{prefix}{f.name}"] = value
    return out


DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:[0-9]+)?)$")


def validate(cfg: Any) -> None:
    """Raise ConfigError naming the first value out of range (every float must also be finite)."""
    if not DEVICE.match(cfg.train.device):
        raise ConfigError(f"train.device must be auto, cpu, cuda, cuda:N or mps, got {cfg.train.device!r}")
    for key, value in _leaves(cfg).items():
        if key in AUTO_KEYS and isinstance(value, str) and value != "auto":
            raise ConfigError(f"{key} must be auto or a count >= 0, got {value!r}")
        items = value if isinstance(value, list) else [value]
        for item in items:
            if isinstance(item, float) and not math.isfinite(item):
                raise ConfigError(f"{key} must be a finite number, got {value!r}")
            if item is None or isinstance(item, (bool, dict, str)):
                continue
            for compare, bound, words in RULES.get(key, ()):
                if not compare(item, bound):
                    raise ConfigError(f"{key} must be {words}, got {value!r}")
