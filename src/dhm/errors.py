"""The errors dhm reports to users as one line and exit code 2 (bad input, never a bug)."""

from __future__ import annotations


class DHMError(Exception):
    """Base class: a problem with the user's input (config, data, checkpoint), reported in one line."""


class ConfigError(DHMError, ValueError):
    """An unknown key, a wrong value type or an invalid value in a recipe or an override."""


class DataError(DHMError):
    """Missing, corrupt or inconsistent data."""


class CheckpointError(DHMError):
    """A checkpoint that cannot be used here (another model or config, corrupt, wrong format)."""
