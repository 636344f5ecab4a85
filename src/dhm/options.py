"""Options declared beside what reads them and found by the config layer, which never imports their owners: the
supervision options of each task (``loss.supervision.*``, registered by :mod:`dhm.tasks`) and the options of each dataset reader (``data.options.*``, registered by
:func:`dhm.data.register_dataset`). A method carries its own options class (:class:`dhm.methods.Method`)."""

from __future__ import annotations

from dataclasses import dataclass

SUPERVISION: dict[str, type] = {}  # task name -> the dataclass of its loss.supervision.* options
READERS: dict[str, type] = {}  # dataset name -> the dataclass of its reader's data.options.*
SAMPLERS: dict[str, type] = {}  # sampler name -> the dataclass of its data.sampler_options.*
TASK_SAMPLERS: dict[str, str] = {}  # task name -> the sampler it draws with where data.sampler is not given


@dataclass
class NoOptions:
    """The options of something that has none."""
