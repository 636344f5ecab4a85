"""``dhm search --show``: each query with its ranked gallery images, framed by identity where the names carry it
(:mod:`dhm.retrieval.pictures` draws the strips)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..data.decode import read_image
from ..retrieval.pictures import BLUE, Cell, draw_strips, frame
from .index import Match


def draw_ranks(
    rows: Sequence[tuple[str | Path, list[Match]]],
    out: str | Path,
    query_ids: Sequence[int] | None = None,
    aspect: float = 0.5,
) -> Path:
    """Write the strips of ``rows`` (query path, its ranked matches) to the PNG ``out``; ``query_ids`` (-1:
    unknown) decide the frames; ``aspect`` is a thumbnail's width over its height."""
    strips = []
    for r, (query, matches) in enumerate(rows):
        qid = query_ids[r] if query_ids is not None else -1
        cells = [Cell(read_image(Path(query), 3), BLUE, "query")]
        cells += [
            Cell(read_image(Path(m.path), 3), frame(qid, m.id), f"{k}: {m.distance:.3f}")
            for k, m in enumerate(matches, 1)
        ]
        strips.append(cells)
    return draw_strips(strips, out, aspect)
