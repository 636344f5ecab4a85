"""Recipes: YAML diffs over the schema with one ``_base_``, dotted ``key=value`` overrides, strict keys and types."""

from __future__ import annotations

import copy
import dataclasses
import difflib
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError
from ..methods import get_method, suffix_method
from ..registry import RegistryError
from .datakeys import unused_keys
from .presets import apply_loss_preset
from .recipe_files import RECIPES_DIR, find_recipe, parse_yaml, read_recipe
from .schema import Config
from .validate import validate


def _yaml(text: str) -> Any:
    return parse_yaml(text, "an override's value")


def resolve_recipe(recipe: str | Path) -> Path:
    """A recipe file from a bundled name or a path."""
    return find_recipe(recipe)[0]


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """``value`` checked against annotation ``tp`` (ints are accepted for floats); raises ConfigError."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(tp):
            try:
                return _coerce(value, option, key)
            except ConfigError:
                continue
        raise ConfigError(f"{key} expects {_type_name(tp)}, got {value!r}")
    if tp is type(None):
        if value is None:
            return None
    elif origin is list:
        if isinstance(value, (list, tuple)):
            (item,) = typing.get_args(tp) or (Any,)
            return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    elif origin is dict or tp is dict:
        if isinstance(value, dict):
            return dict(value)
    elif tp is Any:
        return value
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    raise ConfigError(f"{key} expects {_type_name(tp)}, got {value!r}")


def _fields(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _unknown(key: str, known: Sequence[str], prefix: str) -> ConfigError:
    full = [f"{prefix}{k}" for k in known]
    close = difflib.get_close_matches(f"{prefix}{key}", full, n=1)
    hint = f"; did you mean {close[0]}?" if close else f"; known keys: {', '.join(full)}"
    return ConfigError(f"unknown config key {prefix}{key}{hint}")


def _build(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    hints = _fields(cls)
    kwargs = {}
    for key, value in data.items():
        if key not in hints:
            raise _unknown(key, list(hints), prefix)
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            value = {} if value is None else value  # an empty section (`train:` with nothing under it)
            if not isinstance(value, dict):
                raise ConfigError(f"{prefix}{key} must be a mapping, got {value!r}")
            kwargs[key] = _build(tp, value, f"{prefix}{key}.")
        else:
            kwargs[key] = _coerce(value, tp, f"{prefix}{key}")
    return cls(**kwargs)


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    node, hints, prefix = data, _fields(Config), ""
    if any(not part for part in dotted.split(".")):
        raise ConfigError(
            f"config key {dotted!r} has an empty part (e.g. train.epochs=3; `dhm config --keys` lists them)"
        )
    *parents, leaf = dotted.split(".")
    for part in parents:
        if part not in hints or not dataclasses.is_dataclass(hints[part]):
            raise _unknown(part, [k for k, t in hints.items() if dataclasses.is_dataclass(t)], prefix)
        if not isinstance(node.get(part), dict):  # absent, or an empty section (`train:` with nothing under it)
            node[part] = {} if node.get(part) is None else node[part]
        node = node[part]
        if not isinstance(node, dict):
            raise ConfigError(f"{prefix}{part} must be a mapping, got {node!r}")
        hints, prefix = _fields(hints[part]), f"{prefix}{part}."
    if leaf not in hints:
        raise _unknown(leaf, list(hints), prefix)
    node[leaf] = value


def parse_override(text: str) -> tuple[str, Any]:
    """``"optim.lr=0.05"`` -> ``("optim.lr", 0.05)``; the value is read as YAML (numbers, lists, null)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r} is not key=value (e.g. train.epochs=2)")
    try:
        value = _yaml(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """``data`` (a config's dict form) with ``key=value`` overrides written into it (in place; returned)."""
    for text in overrides:
        _set_dotted(data, *parse_override(text))
    return data


def load_config(recipe: str | Path | None = None, overrides: Sequence[str] = ()) -> Config:
    """The resolved config: schema defaults <- recipe (and its ``_base_``) <- ``key=value`` overrides.

    Example:
        >>> cfg = load_config("demo", ["train.epochs=2", "optim.lr=0.05"])
    """
    data: dict[str, Any] = {}
    if recipe is not None:
        path, method = find_recipe(recipe)
        data = _sections(read_recipe(path.resolve(), set(_fields(Config))))
        try:  # bundled recipes are named by their place in the recipes folder, other files by their stem
            name = str(path.resolve().relative_to(RECIPES_DIR).with_suffix(""))
        except ValueError:
            name = path.stem
        if method:  # an old per-method name: the setup's recipe with the method its name says
            train = data.get("train") if isinstance(data.get("train"), dict) else {}
            data["loss"] = {**(data.get("loss") or {}), "mode": suffix_method(method, train.get("task"))}
            name = f"{name}_{method}"
        data.setdefault("name", name)
    explicit: dict[str, Any] = {}
    schedule = (dict(data.get("optim") or {}).get("milestones"), dict(data.get("train") or {}).get("epochs"))
    for text in overrides:
        key, value = parse_override(text)
        _set_dotted(data, key, value)
        _set_dotted(explicit, key, value)
    scale_milestones(data, explicit, *schedule)
    apply_method_settings(data)
    apply_loss_preset(data, explicit)
    cfg = _build(Config, data)
    validate(cfg)
    return cfg


def scale_milestones(data: dict[str, Any], explicit: dict[str, Any], milestones: Any, epochs: Any) -> None:
    """A recipe's lr milestones follow an override of ``train.epochs`` (unless the milestones are overridden too):
    ``cifar100/resnet110 train.epochs=16`` decays at epochs 7.9 and 11.9, as the 164-epoch recipe does at 81 and
    122, instead of never. At the recipe's own length nothing changes."""
    new = (explicit.get("train") or {}).get("epochs")
    if "milestones" in (explicit.get("optim") or {}) or not isinstance(milestones, list) or not milestones:
        return
    ok = all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (new, epochs))
    if not ok or new == epochs or not all(isinstance(m, (int, float)) for m in milestones):
        return
    data.setdefault("optim", {})["milestones"] = [round(m * new / epochs, 6) for m in milestones]


def _sections(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` with empty sections (``train:`` with nothing under it, read as null) as empty mappings."""
    for key, hint in _fields(Config).items():
        if dataclasses.is_dataclass(hint) and key in data and data[key] is None:
            data[key] = {}
    return data


def apply_method_settings(data: dict[str, Any]) -> None:
    """Fill in the config keys that the method of ``loss.mode`` sets (:mod:`dhm.methods`) where the recipe and
    the overrides did not set them; an unknown method is a ConfigError."""
    mode = (data.get("loss") or {}).get("mode", "dhm")
    try:
        method = get_method(str(mode))
    except RegistryError as exc:
        raise ConfigError(f"loss.mode: {exc} (`dhm methods` lists them)") from None
    epochs = (data.get("train") or {}).get("epochs", 10)
    for dotted, value in method.settings(epochs if isinstance(epochs, int) and epochs > 0 else 10).items():
        node = data
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node.setdefault(leaf, value)


def config_from_dict(data: dict[str, Any]) -> Config:
    """A Config from its dict form (as saved in run directories and checkpoints), strictly checked."""
    data = _sections(copy.deepcopy(data))
    apply_method_settings(data)
    apply_loss_preset(data, {})
    cfg = _build(Config, data)
    validate(cfg)
    return cfg


def to_dict(cfg: Config) -> dict[str, Any]:
    """The plain-dict form of a config."""
    return dataclasses.asdict(cfg)


def dump_config(cfg: Config) -> str:
    """The config as YAML text (what ``dhm config`` prints and run directories keep as ``config.yaml``), without
    the ``data.*`` keys its dataset does not read (:mod:`dhm.config.datakeys`); a count-valued ``data.val_size``
    is shown as a count."""
    data = to_dict(cfg)
    for key in unused_keys(cfg.data.name):
        data["data"].pop(key, None)
    val = data["data"].get("val_size")
    if isinstance(val, float) and val >= 1 and val.is_integer():
        data["data"]["val_size"] = int(val)
    return yaml.safe_dump(data, sort_keys=False)
