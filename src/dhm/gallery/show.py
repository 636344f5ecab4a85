"""Ranked results you can see: one strip per query, the query image then its top-k gallery images, each framed
green (the query's identity) or red (another) where both identities are known, grey where not, with the rank and
cosine distance under each (torchreid's visualised ranks are the model for this picture)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..data.decode import read_image
from .index import Match

GREEN, RED, GREY, BLUE = (0, 170, 0), (220, 0, 0), (150, 150, 150), (40, 90, 220)
CELL_H, BORDER, GAP, LABEL = 128, 4, 8, 16


def _thumb(path: str | Path, colour: tuple[int, int, int], caption: str, width: int):
    from PIL import Image, ImageDraw

    img = read_image(Path(path), 3).resize((width - 2 * BORDER, CELL_H - 2 * BORDER), Image.BILINEAR)
    cell = Image.new("RGB", (width, CELL_H + LABEL), "white")
    ImageDraw.Draw(cell).rectangle([0, 0, width - 1, CELL_H - 1], fill=colour)
    cell.paste(img, (BORDER, BORDER))
    ImageDraw.Draw(cell).text((2, CELL_H + 2), caption, fill="black")
    return cell


def draw_ranks(
    rows: Sequence[tuple[str | Path, list[Match]]],
    out: str | Path,
    query_ids: Sequence[int] | None = None,
    aspect: float = 0.5,
) -> Path:
    """Write the strips of ``rows`` (query path, its ranked matches) to the PNG ``out``; ``query_ids`` (-1:
    unknown) decide the frames; ``aspect`` is a thumbnail's width over its height (re-ID crops: 1/2)."""
    from PIL import Image

    width = max(48, round(CELL_H * aspect))
    top_k = max((len(m) for _, m in rows), default=0)
    sheet = Image.new("RGB", ((top_k + 1) * width + top_k * 2 + GAP, len(rows) * (CELL_H + LABEL + GAP)), "white")
    for r, (query, matches) in enumerate(rows):
        y = r * (CELL_H + LABEL + GAP)
        qid = query_ids[r] if query_ids is not None else -1
        sheet.paste(_thumb(query, BLUE, "query", width), (0, y))
        for k, match in enumerate(matches):
            known = qid >= 0 and match.id >= 0
            colour = (GREEN if match.id == qid else RED) if known else GREY
            cell = _thumb(match.path, colour, f"{k + 1}: {match.distance:.3f}", width)
            sheet.paste(cell, (width + GAP + k * (width + 2), y))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    return out
