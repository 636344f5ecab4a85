"""Every config key with its type, default and one-line meaning, read from the schema itself (its field comments)
and from the options classes of the chosen method, task and dataset reader, so ``dhm config --keys`` can never
drift from the code."""

from __future__ import annotations

import dataclasses
import inspect
import re
from dataclasses import dataclass

from . import schema


@dataclass(frozen=True)
class KeyInfo:
    key: str  # dotted, e.g. optim.lr
    type: str
    default: str
    comment: str


_FIELD = re.compile(r"^\s+(\w+):\s*([^=#]+?)\s*=\s*(.+?)\s*(?:#\s*(.*))?$")


def _comments(cls: type) -> dict[str, tuple[str, str]]:
    """field -> (type text, comment) from the class source."""
    out = {}
    for line in inspect.getsource(cls).splitlines():
        match = _FIELD.match(line)
        if match:
            out[match.group(1)] = (match.group(2), match.group(4) or "")
    return out


def describe_keys(cfg: object | None = None) -> list[KeyInfo]:
    """Every leaf key of the schema, in schema order; with a resolved ``cfg`` also the options of its method
    (``loss.options.*``), its task's supervision (``loss.supervision.*``) and its dataset reader (``data.options.*``),
    and which shared ``loss.*`` keys its method does not read."""
    rows = _schema_rows()
    if cfg is None:
        return rows
    from ..methods import SHARED_KEYS, get_method

    reads = set(get_method(cfg.loss.mode).reads)
    for i, row in enumerate(rows):
        leaf = row.key.removeprefix("loss.")
        if row.key.startswith("loss.") and leaf in SHARED_KEYS and leaf not in reads:
            rows[i] = KeyInfo(row.key, row.type, row.default, f"(not read by loss.mode={cfg.loss.mode}) {row.comment}")
    for prefix, value in (
        ("loss.options", cfg.loss.options),
        ("loss.supervision", cfg.loss.supervision),
        ("data.options", cfg.data.options),
    ):
        if not dataclasses.is_dataclass(value):
            continue
        notes, fresh = _comments(type(value)), type(value)()
        for f in dataclasses.fields(value):
            type_text, comment = notes.get(f.name, (str(f.type), ""))
            rows.append(KeyInfo(f"{prefix}.{f.name}", type_text, _show(getattr(fresh, f.name)), comment))
    return rows


def _schema_rows() -> list[KeyInfo]:
    rows = []
    for section in dataclasses.fields(schema.Config):
        cls = section.default_factory if section.default_factory is not dataclasses.MISSING else None
        if not dataclasses.is_dataclass(cls):
            rows.append(KeyInfo(section.name, "str", repr(section.default), "recipe name: names the run directory"))
            continue
        notes = _comments(cls)
        instance = cls()
        for f in dataclasses.fields(cls):
            type_text, comment = notes.get(f.name, (str(f.type), ""))
            default = getattr(instance, f.name)
            rows.append(KeyInfo(f"{section.name}.{f.name}", type_text, _show(default), comment))
    return rows


def _show(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value) if not isinstance(value, str) else (value or '""')
