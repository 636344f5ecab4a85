"""A method resolved in one place, for ``dhm train``, ``dhm compare``, ``dhm config`` and a saved config alike:
its requirements enforced, its variant settings and soft defaults applied, the keys it does not read refused.

On the merged recipe and overrides (a plain mapping, before the typed build), in this order:

1. the task must be one the method supports (``train.task``);
2. ``model.branches``: the method's layout where none was given; a given layout must be of a family the method
   accepts (``ce`` trains the plain backbone, ``dml`` its peers, ...);
3. ``data.sampler``: a method that needs its own sampler (CS-KD's class pairs) gets it; another one given is refused;
4. a variant's settings (``dhm-rampup``'s ramp-up) replace the recipe's values for those keys (an override of
   one of them tunes the variant: ``dhm-rampup loss.rampup_epochs=15``);
5. soft defaults fill the keys nothing gave;
6. a shared ``loss.*`` key the method does not read is refused when given as an override and reset to its default
   when it came from the recipe (so config.yaml says what trains); ``loss.options.*`` must be the method's options,
   ``loss.supervision.*`` the task's, ``data.options.*`` the dataset reader's.

A refusal is one :class:`~dhm.errors.ConfigError` line naming both sides.
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any

from ..errors import ConfigError
from ..methods import METHODS, RENAMED, SHARED_KEYS, Method, get_method, layout_family
from ..options import READERS, SAMPLERS, SUPERVISION, TASK_SAMPLERS, NoOptions
from ..registry import RegistryError
from .datakeys import DATASET_KEYS
from .schema import LossConfig
from .typed import build

SHARED_DEFAULTS = {f.name: f.default for f in dataclasses.fields(LossConfig) if f.name in SHARED_KEYS}


def _get(data: dict[str, Any], dotted: str) -> tuple[bool, Any]:
    node: Any = data
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _put(data: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = data
    for part in parents:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[leaf] = value


def method_of(data: dict[str, Any]) -> tuple[str, Method]:
    """The name and the method of ``loss.mode`` in a config mapping (a one-line ConfigError for an unknown one)."""
    mode = str((data.get("loss") or {}).get("mode", "dhm"))
    if mode in RENAMED:
        raise ConfigError(
            f"loss.mode={mode} is now loss.mode={RENAMED[mode]}: the retrieval task supplies BoT's supervision "
            "(identity CE + triplet + center loss), the method only what it adds"
        )
    try:
        return mode, get_method(mode)
    except RegistryError as exc:
        raise ConfigError(f"loss.mode: {exc} (`dhm methods` lists them)") from None


def resolve_method(data: dict[str, Any], explicit: dict[str, Any], saved: bool = False) -> None:
    """Resolve the method of ``data`` (merged recipe and overrides, changed in place); ``explicit`` holds the keys
    given as overrides. ``saved``: ``data`` is a config a run saved (what trained): a variant's settings do not
    replace its values (a sweep's own ramp-up stays). See the module docstring."""
    mode, method = method_of(data)
    epochs = _get(data, "train.epochs")[1]
    epochs = epochs if isinstance(epochs, int) and not isinstance(epochs, bool) and epochs > 0 else 10

    def source(key: str) -> str:
        return "an override" if _get(explicit, key)[0] else "the recipe"

    task = _get(data, "train.task")[1] or "classification"
    if task not in method.tasks:
        raise ConfigError(
            f"loss.mode={mode} supports train.task {' or '.join(method.tasks)}; {source('train.task')} sets "
            f"train.task={task}"
        )
    _resolve_layout(data, mode, method, source)
    if method.sampler:
        given, value = _get(data, "data.sampler")
        if given and value not in ("", method.sampler):
            raise ConfigError(
                f"loss.mode={mode} needs data.sampler={method.sampler}; {source('data.sampler')} sets "
                f"data.sampler={value}"
            )
        _put(data, "data.sampler", method.sampler)
    for key, value in method.settings(epochs).items():
        if not _get(explicit, key)[0] and not (saved and _get(data, key)[0]):  # an override tunes the variant
            _put(data, key, value)
    for key, value in method.defaults(epochs).items():
        if not _get(data, key)[0]:
            _put(data, key, value)
    _check_reads(data, explicit, mode, method)


def _resolve_layout(data: dict[str, Any], mode: str, method: Method, source) -> None:
    given, value = _get(data, "model.branches")
    if not given or value in ("", None):
        _put(data, "model.branches", method.layout)
        return
    family = layout_family(value)
    shown = value if isinstance(value, str) else "[a list of branch specs]"
    if method.layout == "none" and value != "none":
        raise ConfigError(
            f"loss.mode={mode} trains the plain backbone (model.branches=none); {source('model.branches')} sets "
            f"model.branches={shown}"
        )
    if method.layout != "none" and family not in method.accepts():
        raise ConfigError(
            f"loss.mode={mode} trains on model.branches={method.layout} (or the layouts "
            f"{', '.join(method.accepts())}); {source('model.branches')} sets model.branches={shown}"
        )


def _check_reads(data: dict[str, Any], explicit: dict[str, Any], mode: str, method: Method) -> None:
    if not isinstance(data.get("loss"), dict):
        data["loss"] = {}
    loss = data["loss"]
    given = explicit.get("loss") or {}
    reads = set(method.reads)
    for key in SHARED_KEYS:
        if key in reads or key not in loss:
            continue
        if key in given:
            reading = ", ".join(f"loss.{k}" for k in method.reads) or "none of the shared keys"
            raise ConfigError(f"loss.mode={mode} does not read loss.{key} (it reads {reading}); drop the override")
        loss[key] = SHARED_DEFAULTS[key]  # the recipe's value for another method: config.yaml says what trains
    if loss.get("preset") and "alpha" not in reads:
        raise ConfigError(f"loss.preset={loss['preset']} sets mimicking keys; loss.mode={mode} does not mimic")
    _check_names(loss, "loss.options", method.options, f"loss.mode={mode}", given.get("options"))
    task = str((data.get("train") or {}).get("task") or "classification")
    _check_names(loss, "loss.supervision", SUPERVISION.get(task), f"train.task={task}", given.get("supervision"))
    section = data.get("data") if isinstance(data.get("data"), dict) else {}
    name = str(section.get("name", "digits"))
    if name in DATASET_KEYS:  # an unknown dataset is refused by name when the data is read
        wanted = (explicit.get("data") or {}).get("options")
        _check_names(section, "data.options", READERS.get(name), f"data.name={name}", wanted)
    sampler = section.get("sampler") or TASK_SAMPLERS.get(task, "random")
    wanted = (explicit.get("data") or {}).get("sampler_options")
    _check_names(section, "data.sampler_options", SAMPLERS.get(sampler), f"data.sampler={sampler}", wanted)


def _owners(key: str) -> list[str]:
    """The methods whose options have ``key``."""
    return [n for n in METHODS.list() if METHODS.get(n).options and key in _names(METHODS.get(n).options)]


def _names(cls: type | None) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)] if cls is not None else []


def _check_names(section: dict[str, Any], prefix: str, cls: type | None, owner: str, explicit: Any) -> None:
    """Check ``section[attr]`` (a mapping of options) against the dataclass ``cls`` of ``owner``: a key of another
    method or reader is refused when given as an override and dropped when it came from the recipe (the recipe's
    setting for its own method or dataset); a key of nothing is refused with a suggestion."""
    attr = prefix.rpartition(".")[2]
    values = section.get(attr)
    if values in (None, {}) or dataclasses.is_dataclass(values):
        return
    if not isinstance(values, dict):
        raise ConfigError(f"{prefix} must be a mapping, got {values!r}")
    known = _names(cls)
    given = explicit if isinstance(explicit, dict) else {}
    for key in list(values):
        if key in known:
            continue
        owners = _owners(key) if prefix == "loss.options" else []
        owners += [f"data.name={r}" for r in READERS if key in _names(READERS[r])] if prefix == "data.options" else []
        if prefix == "data.sampler_options":
            owners += [f"data.sampler={n}" for n in SAMPLERS if key in _names(SAMPLERS[n])]
        if owners and key not in given:
            del values[key]  # the recipe's option of its own method or reader, not of the one chosen now
            continue
        if owners:
            others = " / ".join(o if o.startswith("data.") else f"loss.mode={o}" for o in owners)
            raise ConfigError(f"{prefix}.{key} is an option of {others}, not of {owner}")
        close = difflib.get_close_matches(key, known, n=1)
        hint = f"; did you mean {prefix}.{close[0]}?" if close else ""
        has = f"its options: {', '.join(f'{prefix}.{k}' for k in known)}" if known else "it has none"
        raise ConfigError(f"{owner} has no option {prefix}.{key}{hint} ({has})")


def sampler_name(cfg: Any) -> str:
    """The sampler a config trains with: ``data.sampler``, else its task's."""
    return cfg.data.sampler or TASK_SAMPLERS.get(cfg.train.task, "random")


def build_options(cfg: Any) -> None:
    """Replace the mappings ``loss.options``, ``loss.supervision``, ``data.options`` and ``data.sampler_options`` of
    a built config by the typed options of its method, task, dataset reader and sampler (checked, defaults
    filled)."""
    method = get_method(cfg.loss.mode)
    for section, attr, cls, prefix in (
        (cfg.loss, "options", method.options, "loss.options."),
        (cfg.loss, "supervision", SUPERVISION.get(cfg.train.task), "loss.supervision."),
        (cfg.data, "options", READERS.get(cfg.data.name), "data.options."),
        (cfg.data, "sampler_options", SAMPLERS.get(sampler_name(cfg)), "data.sampler_options."),
    ):
        value = getattr(section, attr)
        if dataclasses.is_dataclass(value):
            value = dataclasses.asdict(value)
        if attr == "options" and section is cfg.data and cfg.data.name not in DATASET_KEYS:
            continue  # an unknown dataset: refused by name when the data is read
        setattr(section, attr, build(cls or NoOptions, dict(value or {}), prefix))
