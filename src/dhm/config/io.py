"""Recipes: YAML diffs over the schema with one ``_base_``, dotted ``key=value`` overrides, strict keys and types."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError
from ..methods import get_method
from .datakeys import unused_keys
from .legacy import migrate
from .presets import apply_loss_preset
from .recipe_files import RECIPES_DIR, find_recipe, parse_yaml, read_recipe
from .resolve import build_options, resolve_method
from .schema import Config
from .typed import build, fields_of, unknown_key
from .validate import validate


def _yaml(text: str) -> Any:
    return parse_yaml(text, "an override's value")


def resolve_recipe(recipe: str | Path) -> Path:
    """A recipe file from a bundled name or a path."""
    return find_recipe(recipe)[0]


NAMESPACES = {
    "loss.options",
    "loss.supervision",
    "data.options",
    "data.sampler_options",
    "model.options",
}  # mappings checked against what reads them


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    node, hints, prefix = data, fields_of(Config), ""
    if any(not part for part in dotted.split(".")):
        raise ConfigError(
            f"config key {dotted!r} has an empty part (e.g. train.epochs=3; `dhm config --keys` lists them)"
        )
    *parents, leaf = dotted.split(".")
    for i, part in enumerate(parents):
        if f"{prefix}{part}" in NAMESPACES:  # loss.options.hint_weight=0: checked once the method is known
            inner = node.get(part) if isinstance(node.get(part), dict) else {}
            node[part] = inner
            for deeper in parents[i + 1 :]:
                inner = inner.setdefault(deeper, {})
            inner[leaf] = value
            return
        if part not in hints or not dataclasses.is_dataclass(hints[part]):
            raise unknown_key(part, [k for k, t in hints.items() if dataclasses.is_dataclass(t)], prefix)
        if not isinstance(node.get(part), dict):  # absent, or an empty section (`train:` with nothing under it)
            node[part] = {} if node.get(part) is None else node[part]
        node = node[part]
        if not isinstance(node, dict):
            raise ConfigError(f"{prefix}{part} must be a mapping, got {node!r}")
        hints, prefix = fields_of(hints[part]), f"{prefix}{part}."
    if leaf not in hints:
        raise unknown_key(leaf, list(hints), prefix)
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
        data = _sections(read_recipe(path.resolve(), set(fields_of(Config))))
        try:  # bundled recipes are named by their place in the recipes folder, other files by their stem
            name = str(path.resolve().relative_to(RECIPES_DIR).with_suffix(""))
        except ValueError:
            name = path.stem
        if method:  # a per-method name: the setup's recipe with the method its name says
            data["loss"] = {**(data.get("loss") or {}), "mode": method}
            name = f"{name}_{method}"
        data.setdefault("name", name)
    explicit: dict[str, Any] = {}
    schedule = (dict(data.get("optim") or {}).get("milestones"), dict(data.get("train") or {}).get("epochs"))
    for text in overrides:
        key, value = parse_override(text)
        _set_dotted(data, key, value)
        _set_dotted(explicit, key, value)
    scale_milestones(data, explicit, *schedule)
    return _resolved(data, explicit)


def _resolved(data: dict[str, Any], explicit: dict[str, Any], saved: bool = False) -> Config:
    resolve_method(data, explicit, saved)
    apply_loss_preset(data, explicit)
    cfg = build(Config, data)
    build_options(cfg)
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
    for key, hint in fields_of(Config).items():
        if dataclasses.is_dataclass(hint) and key in data and data[key] is None:
            data[key] = {}
    return data


def config_from_dict(data: dict[str, Any]) -> Config:
    """A Config from its dict form (as saved in run directories and checkpoints), strictly checked."""
    data = migrate(_sections(copy.deepcopy(data)))
    return _resolved(data, {}, saved=True)


def to_dict(cfg: Config) -> dict[str, Any]:
    """The plain-dict form of a config."""
    return dataclasses.asdict(cfg)


def written_mode(data: dict[str, Any]) -> str:
    """The method a config's mapping is written as: its own, or a tuned variant's base."""
    method = get_method(data["loss"]["mode"])
    if not method.base:
        return data["loss"]["mode"]
    epochs = data["train"]["epochs"]
    for dotted, value in method.settings(epochs).items():
        node: Any = data
        for part in dotted.split("."):
            node = node[part]
        if node != value:
            return method.base
    return data["loss"]["mode"]


def dump_config(cfg: Config) -> str:
    """The config as YAML text (what ``dhm config`` prints and run directories keep as ``config.yaml``), without
    the ``data.*`` keys its dataset does not read (:mod:`dhm.config.datakeys`); a count-valued ``data.val_size``
    is shown as a count. A variant whose defining settings were tuned (``dhm-rampup loss.rampup_epochs=15``) is
    written as its base method with those settings, so that the file read back as a recipe trains the same."""
    data = to_dict(cfg)
    data["loss"]["mode"] = written_mode(data)
    for key in unused_keys(cfg.data.name):
        data["data"].pop(key, None)
    val = data["data"].get("val_size")
    if isinstance(val, float) and val >= 1 and val.is_integer():
        data["data"]["val_size"] = int(val)
    return yaml.safe_dump(data, sort_keys=False)
