"""Named loss presets (``loss.preset``): DHM settings chosen by measurement, applied when a config is resolved.

A preset sets some ``loss.*`` keys, scaled to the run where it needs to (a ramp-up over a fraction of
``train.epochs``). It replaces what a recipe says for those keys; giving one of them as an override too is an
error, never a silent choice between the two."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import ConfigError
from ..methods.core import gentle as gentle_settings
from ..registry import Registry, RegistryError

LOSS_PRESETS: Registry[Callable[[int], dict[str, Any]]] = Registry("loss preset")


@LOSS_PRESETS.register("gentle")
def gentle(epochs: int) -> dict[str, Any]:
    """Mimicking at half weight, ramped up with a sigmoid over the first half of the run: the setting chosen on
    validation by benchmarks/never_hurts.sh (RESULTS.md has its measured figures); the settings of the variant
    ``dhm-gentle`` (:func:`dhm.methods.core.gentle`), one source for both spellings."""
    return {key.removeprefix("loss."): value for key, value in gentle_settings(epochs).items()}


def apply_loss_preset(data: dict[str, Any], explicit: dict[str, Any]) -> None:
    """Write the preset named by ``data['loss']['preset']`` into ``data`` (the merged recipe and overrides);
    ``explicit`` holds the keys given as overrides, which must not contradict it."""
    loss = data.get("loss") or {}
    name = loss.get("preset") or ""
    if not name:
        return
    try:
        preset = LOSS_PRESETS.get(str(name))
    except RegistryError as exc:
        raise ConfigError(f"loss.preset: {exc}") from None
    epochs = (data.get("train") or {}).get("epochs", 10)
    values = preset(int(epochs) if isinstance(epochs, int) and epochs > 0 else 10)
    given = explicit.get("loss") or {}
    for key, value in values.items():
        if key in given and given[key] != value:
            raise ConfigError(
                f"loss.preset={name} sets loss.{key}={value}, and loss.{key}={given[key]} was given too: drop one"
            )
    data.setdefault("loss", {}).update(values)
