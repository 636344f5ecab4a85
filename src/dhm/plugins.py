"""Plugins: modules that register methods, loss terms, steps, samplers, tasks or datasets from outside dhm, imported
once at start-up so that ``dhm train``, ``dhm compare`` and the children of ``dhm compare --jobs N`` see them.

Two ways in, both read by :func:`load_plugins`:

* the entry-point group ``dhm.plugins`` of an installed package (``[project.entry-points."dhm.plugins"]
  mine = "my_package.my_method"`` in its pyproject.toml);
* the environment variable ``DHM_PLUGINS``: a comma-separated list of importable module names or ``.py`` files
  (``DHM_PLUGINS=my_method.py``); child processes inherit it.

A plugin is imported, never executed from a config file; a plugin that fails to import stops the command with one
line naming it. docs/architecture.md shows a complete plugin file (DLB as a method).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import sys
from pathlib import Path

from .errors import ConfigError

GROUP = "dhm.plugins"
ENV = "DHM_PLUGINS"
_LOADED: dict[str, object] = {}


def _import_file(path: Path) -> object:
    name = f"dhm_plugin_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"not a Python file: {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def load_plugins(names: str | None = None) -> list[str]:
    """Import every plugin once (``names``: a ``DHM_PLUGINS``-style list; default the environment's, then the
    entry points of the group ``dhm.plugins``); returns what is loaded. Importing one twice does nothing."""
    wanted = [n.strip() for n in (os.environ.get(ENV, "") if names is None else names).split(",") if n.strip()]
    entries = list(importlib.metadata.entry_points(group=GROUP)) if names is None else []
    for item in [*wanted, *entries]:
        key = item if isinstance(item, str) else f"{item.name}={item.value}"
        if key in _LOADED:
            continue
        try:
            if isinstance(item, str) and item.endswith(".py"):
                path = Path(item).expanduser().resolve()
                _LOADED[key] = _import_file(path)
            elif isinstance(item, str):
                _LOADED[key] = importlib.import_module(item)
            else:
                _LOADED[key] = item.load()
        except Exception as exc:  # noqa: BLE001 - any import failure of a plugin: one line naming it
            where = f"{ENV}={item}" if isinstance(item, str) else f"entry point {key} of {GROUP}"
            raise ConfigError(f"plugin {where} could not be imported: {type(exc).__name__}: {exc}") from None
    return list(_LOADED)
