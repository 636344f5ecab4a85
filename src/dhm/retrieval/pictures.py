"""Ranked results as a picture: one strip per query, the query image (framed blue) then its top-k gallery images,
each framed green (the query's identity), red (another) or grey (unknown), with its rank and distance under it;
the model for it is torchreid's visualised ranks. Images come as uint8 (C, H, W) tensors or PIL images."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

GREEN, RED, GREY, BLUE = (0, 170, 0), (220, 0, 0), (150, 150, 150), (40, 90, 220)
CELL_H, BORDER, GAP, LABEL = 128, 4, 8, 16


@dataclass
class Cell:
    """One picture of a strip: the image, its frame colour and its caption."""

    image: Any  # a uint8 (C, H, W) tensor or a PIL image
    colour: tuple[int, int, int]
    caption: str


def frame(query_id: int, gallery_id: int) -> tuple[int, int, int]:
    """Green for the query's identity, red for another, grey where either is unknown (< 0)."""
    if query_id < 0 or gallery_id < 0:
        return GREY
    return GREEN if query_id == gallery_id else RED


def _pil(image: Any):
    from PIL import Image

    if isinstance(image, torch.Tensor):
        array = image.detach().cpu()
        array = array.expand(3, -1, -1) if array.shape[0] == 1 else array
        return Image.fromarray(array.permute(1, 2, 0).contiguous().numpy())
    return image.convert("RGB")


def draw_strips(rows: Sequence[Sequence[Cell]], out: str | Path, aspect: float = 0.5) -> Path:
    """Write one strip per row of ``rows`` (the query's cell first) to the PNG ``out``; ``aspect`` is a
    thumbnail's width over its height (re-ID crops: 1/2)."""
    from PIL import Image, ImageDraw

    width = max(48, round(CELL_H * aspect))
    cells = max((len(r) for r in rows), default=1)
    sheet = Image.new("RGB", (cells * width + (cells - 1) * 2 + GAP, len(rows) * (CELL_H + LABEL + GAP)), "white")
    for r, row in enumerate(rows):
        y = r * (CELL_H + LABEL + GAP)
        for k, cell in enumerate(row):
            x = 0 if k == 0 else width + GAP + (k - 1) * (width + 2)
            tile = Image.new("RGB", (width, CELL_H + LABEL), "white")
            draw = ImageDraw.Draw(tile)
            draw.rectangle([0, 0, width - 1, CELL_H - 1], fill=cell.colour)
            tile.paste(
                _pil(cell.image).resize((width - 2 * BORDER, CELL_H - 2 * BORDER), Image.BILINEAR), (BORDER, BORDER)
            )
            draw.text((2, CELL_H + 2), cell.caption, fill="black")
            sheet.paste(tile, (x, y))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    return out
