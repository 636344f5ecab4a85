"""Configs saved before methods became contracts (run directories, checkpoints), read as what they trained: the
method-specific ``loss.*`` keys moved into ``loss.options.*`` (of the method that read them) or the retrieval
task's ``loss.supervision.*``, a reader's own ``data.*`` keys into ``data.options.*``, ``data.instances`` into
``data.sampler_options.instances``, the ``bot-*`` methods renamed, and ``model.branches`` of a method that trains the
plain backbone (whatever was saved, no branch was built) written as ``none``."""

from __future__ import annotations

from typing import Any

from ..methods import RENAMED, get_method
from ..registry import RegistryError

# old loss key -> (the method that read it, its option name); None: the retrieval task's supervision
MOVED: dict[str, tuple[str | None, str]] = {
    "aux_weight": ("dsn", "aux_weight"),
    "aux_decay": ("dsn", "aux_decay"),
    "aux_stop": ("dsn", "aux_stop"),
    "self_weight": ("cskd", "weight"),
    "partner_forward": ("cskd", "partner_forward"),
    "self_alpha": ("pskd", "final_alpha"),
    "hint_weight": ("byot", "hint_weight"),
    "peer_update": ("dml", "peer_update"),
    "embed_weight": ("dhm-emb", "embed_weight"),
    "margin": (None, "margin"),
    "triplet_weight": (None, "triplet_weight"),
    "center_weight": (None, "center_weight"),
    "center_lr": (None, "center_lr"),
}


DATA_MOVED = {  # old data key -> the readers whose data.options it is now
    "train_size": ("synthetic",),
    "test_size": ("synthetic",),
    "num_classes": ("synthetic",),
    "variant": ("cuhk03np",),
    "folders": ("reid_folders",),
    "camera_pattern": ("reid_folders",),
    "test_ids": ("reid_folders",),
}


def migrate(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` (a saved config's mapping, changed in place) in today's spelling; a current one is unchanged."""
    section = data.get("data")
    if isinstance(section, dict) and "instances" in section:  # the identity sampler's K
        instances = section.pop("instances")
        if (data.get("train") or {}).get("task") == "retrieval" or section.get("sampler") in ("identity", "pk"):
            section.setdefault("sampler_options", {})["instances"] = instances
    if isinstance(section, dict):
        for old, readers in DATA_MOVED.items():
            if old in section:
                value = section.pop(old)
                if section.get("name") in readers:
                    section.setdefault("options", {})[old] = value
    loss = data.get("loss")
    if not isinstance(loss, dict) or not any(key in loss for key in MOVED) and loss.get("mode") not in RENAMED:
        return data
    mode = RENAMED.get(loss.get("mode"), loss.get("mode", "dhm"))
    loss["mode"] = mode
    retrieval = (data.get("train") or {}).get("task") == "retrieval"
    for old, (owner, new) in MOVED.items():
        if old not in loss:
            continue
        value = loss.pop(old)
        if old == "peer_update" and value == "alternating":
            value = (
                "alternating-one-batch"  # before 2026-12-07 dml's alternating update stepped every peer on one batch
            )
        if owner is None and retrieval:
            loss.setdefault("supervision", {})[new] = value
        elif owner == mode:
            loss.setdefault("options", {})[new] = value
    try:
        plain = get_method(str(mode)).layout == "none"
    except RegistryError:
        plain = False
    if plain and isinstance(data.get("model"), dict):
        data["model"]["branches"] = "none"
    return data
