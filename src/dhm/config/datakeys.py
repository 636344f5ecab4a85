"""Which ``data.*`` keys each dataset reads: filled by the dataset registry (:func:`dhm.data.register_dataset`
writes here, the data layer importing this one), read by :func:`dhm.config.dump_config` to leave out the keys a
run's dataset ignores. Config never imports the data layer."""

from __future__ import annotations

# ``data.*`` keys that only some readers use; every other data key applies to every dataset.
SPECIFIC_KEYS = ("root", "download", "verify_md5", "in_memory", "workers")  # a reader's own: data.options.*
DATASET_KEYS: dict[str, tuple[str, ...]] = {}  # dataset -> the specific keys its reader uses


def unused_keys(name: str) -> set[str]:
    """The dataset-specific ``data.*`` keys that dataset ``name`` does not read (none for an unknown name)."""
    return set(SPECIFIC_KEYS) - set(DATASET_KEYS[name]) if name in DATASET_KEYS else set()
