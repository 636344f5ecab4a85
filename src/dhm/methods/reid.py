"""The re-ID methods: BoT's strong baseline on the main head or every head, with DHM's mimicking and embedding
mimicking (docs/method.md section 7)."""

from __future__ import annotations

from typing import Any

from .core import TermSpec, _method, ce_terms, dhm_terms


def bot_terms(loss: Any, heads: str = "main", mimic: bool = False, embed: bool = False) -> list[TermSpec]:
    """The re-ID strong baseline (BoT) on ``heads``: identity cross-entropy (label smoothing) + batch-hard triplet
    (+ center loss with ``loss.center_weight > 0``); with ``mimic`` DHM's pairwise KL on the identity logits, with
    ``embed`` embedding mimicking."""
    terms = [
        *ce_terms(loss, heads),
        TermSpec("triplet", {"heads": heads, "margin": loss.margin, "weight": loss.triplet_weight}),
    ]
    if mimic:
        terms.append(dhm_terms(loss)[-1])
    if embed:
        terms.append(TermSpec("pair_dist", {"graph": "all", "weight": loss.embed_weight}))
    if loss.center_weight > 0:
        terms.append(TermSpec("center", {"heads": heads, "weight": loss.center_weight, "lr": loss.center_lr}))
    return terms


def _bot_settings(epochs: int) -> dict[str, Any]:
    return {"loss.label_smoothing": 0.1}


_method(
    "bot", bot_terms, "none", _bot_settings, "re-ID strong baseline: identity CE (smoothing 0.1) + batch-hard triplet"
)
_method("bot-dsl", lambda loss: bot_terms(loss, "all"), settings=_bot_settings, doc="bot on every head, no mimicking")
_method(
    "bot-dhm",
    lambda loss: bot_terms(loss, "all", mimic=True),
    settings=_bot_settings,
    doc="bot on every head + DHM's pairwise KL on the identity logits",
)
_method(
    "bot-dhm-gentle",
    lambda loss: bot_terms(loss, "all", mimic=True),
    settings=lambda e: {**_bot_settings(e), "loss.preset": "gentle"},
    doc="bot-dhm with loss.preset=gentle (alpha 0.5, sigmoid ramp-up over half the run)",
)
_method(
    "bot-dhm-emb",
    lambda loss: bot_terms(loss, "all", mimic=True, embed=True),
    settings=_bot_settings,
    doc="bot-dhm + embedding mimicking (the heads' in-batch distance matrices, teacher detached)",
)
