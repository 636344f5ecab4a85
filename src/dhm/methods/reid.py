"""The re-ID method of its own: DHM with embedding mimicking (docs/method.md section 7). BoT's supervision
(identity cross-entropy + batch-hard triplet + center loss) belongs to the retrieval task, so every method that
supports ``retrieval`` trains on top of it: ``market1501/resnet50 loss.mode=dhm`` is BoT + DHM, ``loss.mode=ce``
is BoT alone."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError
from .core import METHODS, SHARED_KEYS, Method, TermSpec, pair_kl


@dataclass
class EmbeddingOptions:
    embed_weight: float = 1.0  # weight of the embedding-mimicking term (the heads' in-batch distance matrices)

    def __post_init__(self) -> None:
        if self.embed_weight < 0:
            raise ConfigError(f"loss.options.embed_weight must be >= 0, got {self.embed_weight!r}")


def _emb_terms(loss: Any) -> list[TermSpec]:
    return [pair_kl(loss), TermSpec("pair_dist", {"graph": "all", "weight": loss.options.embed_weight})]


METHODS.register("dhm-emb")(
    Method(
        _emb_terms,
        layouts=("paper", "list", "light-every-stage", "byot"),
        tasks=("retrieval",),
        reads=SHARED_KEYS,
        options=EmbeddingOptions,
        doc="DHM + embedding mimicking (the heads' in-batch distance matrices, teacher detached); re-ID",
    )
)

#: the re-ID methods' former names: the method each is now, on a retrieval recipe (the task supervises as BoT)
RENAMED = {"bot": "ce", "bot-dsl": "dsl", "bot-dhm": "dhm", "bot-dhm-gentle": "dhm-gentle", "bot-dhm-emb": "dhm-emb"}
