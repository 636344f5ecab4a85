"""Options declared beside what reads them and found by the config layer, which never imports their owners: the
supervision options of each task (``loss.supervision.*``, registered by :mod:`dhm.tasks`). A method carries its
own options class (:class:`dhm.methods.Method`); a dataset reader and a sampler register theirs with their
registries."""

from __future__ import annotations

from dataclasses import dataclass

SUPERVISION: dict[str, type] = {}  # task name -> the dataclass of its loss.supervision.* options


@dataclass
class NoOptions:
    """The options of something that has none."""
