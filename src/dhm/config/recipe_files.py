"""Reading recipe files safely: YAML 1.2 scalars, a size limit, bounded nesting and alias expansion, ``_base_``
confined to recipe files (a bundled recipe name or a relative ``.yaml`` path), and errors that never quote the
content of a file that is not a dhm recipe."""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError, first_line
from ..methods import METHODS, RENAMED

RECIPES_DIR = Path(__file__).resolve().parent.parent / "recipes"
MAX_BYTES = 1 << 20  # a recipe is a few hundred bytes; anything over 1 MiB is not one
MAX_DEPTH = 32  # recipes nest two levels; values (lists of branch specs) a few more
MAX_ITEMS = 100_000  # scalars and containers after alias expansion
SUFFIXES = (".yaml", ".yml")


class _Loader(yaml.SafeLoader):
    """YAML 1.2 booleans: only true/false are booleans, so ``amp: off`` stays the string "off"."""


_Loader.yaml_implicit_resolvers = {
    key: [r for r in resolvers if r[0] != "tag:yaml.org,2002:bool"]
    for key, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
# YAML 1.2 floats: scientific notation without a dot (5e-4, 1E6) is a number, not a string.
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789")
)


def _bounded(value: Any, where: str) -> Any:
    """``value`` unless it nests deeper than MAX_DEPTH or expands (through aliases) to more than MAX_ITEMS items;
    the walk stops at the limit, so a billion-laughs document costs no more than MAX_ITEMS steps."""
    count, stack = 0, [(value, 1)]
    while stack:
        node, depth = stack.pop()
        count += 1
        if depth > MAX_DEPTH or count > MAX_ITEMS:
            what = (
                f"nests deeper than {MAX_DEPTH} levels" if depth > MAX_DEPTH else f"expands to over {MAX_ITEMS:,} items"
            )
            raise ConfigError(f"{where} {what} (YAML aliases?); a recipe is a small mapping")
        if isinstance(node, dict):
            stack += [(v, depth + 1) for v in node.values()]
        elif isinstance(node, list):
            stack += [(v, depth + 1) for v in node]
    return value


def parse_yaml(text: str, where: str) -> Any:
    """YAML text (a recipe, an override's value) with dhm's scalars, bounded in depth and size."""
    try:
        return _bounded(yaml.load(text, Loader=_Loader), where)
    except RecursionError:
        raise ConfigError(f"{where} nests too deeply to read") from None


def yaml_problem(exc: Exception) -> str:
    """A YAML or OS error in one line, with the line and column of a syntax error (never the file's content)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None)
    if mark is not None:
        return f"line {mark.line + 1}, column {mark.column + 1}: {problem or first_line(exc)}"
    return first_line(exc)


def read_text(path: Path) -> str:
    """A recipe file's text: a regular UTF-8 file of at most MAX_BYTES."""
    if not path.is_file():
        raise ConfigError(f"recipe {path} is not a file")
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read recipe {path}: {exc.strerror or exc}") from None
    if len(raw) > MAX_BYTES:
        raise ConfigError(f"recipe {path} is larger than {MAX_BYTES >> 20} MiB: not a recipe")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"recipe {path} is not a text (UTF-8) file: not a recipe") from None


def read_recipe(path: Path, sections: set[str], seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A recipe's mapping with its ``_base_`` chain merged under it. ``sections`` are the config's top-level
    keys: a file with none of them is not a dhm recipe, and is refused without quoting it."""
    if path in seen:
        raise ConfigError(f"recipe {path} includes itself through _base_")
    try:
        data = parse_yaml(read_text(path), f"recipe {path}") or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"cannot read recipe {path}: {yaml_problem(exc)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"recipe {path} must be a mapping of sections, got {type(data).__name__}")
    if data and not (set(map(str, data)) & (sections | {"_base_"})):
        raise ConfigError(f"{path} is not a dhm recipe: none of its top-level keys is a config section")
    if "_base_" not in data:
        return data
    data = dict(data)
    base = base_path(data.pop("_base_"), path)
    return merge(read_recipe(base, sections, (*seen, path)), data)


def base_path(base: Any, recipe: Path) -> Path:
    """The file of a ``_base_`` entry: a bundled recipe name (``cifar100/resnet32``) or a ``.yaml`` path relative to
    the recipe."""
    if not isinstance(base, str) or not base.strip():
        raise ConfigError(f"recipe {recipe}: _base_ must be a bundled recipe name or a relative .yaml path")
    if not base.endswith(SUFFIXES):
        bundled = RECIPES_DIR / f"{base}.yaml"
        if not bundled.is_file():
            raise ConfigError(f"recipe {recipe}: _base_ {base!r} is neither a bundled recipe nor a .yaml file")
        return bundled
    path = (recipe.parent / Path(base).expanduser()).resolve()
    if not path.is_file():
        raise ConfigError(f"recipe {recipe}: its _base_ {path} is not a file")
    return path


def merge(base: dict[str, Any], diff: dict[str, Any]) -> dict[str, Any]:
    """``diff`` over ``base``, section by section (``options`` mappings are replaced whole)."""
    out = dict(base)
    for key, value in diff.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "options":
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def list_recipes() -> list[str]:
    """Names of the bundled recipes (``cifar100/resnet110``, ``demo``, ...). A setup recipe also answers to
    ``<name>_<method>`` (``cifar100/resnet110_dsl``: the recipe with ``loss.mode=dsl``)."""
    return sorted(
        str(p.relative_to(RECIPES_DIR).with_suffix(""))
        for p in RECIPES_DIR.rglob("*.yaml")
        if not p.relative_to(RECIPES_DIR).parts[0].startswith("_")
    )


def find_recipe(recipe: str | Path) -> tuple[Path, str]:
    """The recipe file of a bundled name or a path, and the method its name adds (``""`` if none):
    ``cifar100/resnet32_ce`` is the bundled ``cifar100/resnet32`` with ``loss.mode=ce``."""
    path = Path(recipe).expanduser()
    if path.is_file():
        return path, ""
    name = str(recipe).removesuffix(".yaml")
    bundled = RECIPES_DIR / f"{name}.yaml"
    if bundled.is_file():
        return bundled, ""
    setup, _, method = name.rpartition("_")  # method names hold no "_"; setup names may
    if setup and (method in METHODS or method in RENAMED) and (RECIPES_DIR / f"{setup}.yaml").is_file():
        return RECIPES_DIR / f"{setup}.yaml", method
    close = difflib.get_close_matches(str(recipe), list_recipes(), n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else "; `dhm recipes` lists the bundled ones"
    raise ConfigError(f"no recipe {str(recipe)!r} (neither a file nor a bundled recipe){hint}")
