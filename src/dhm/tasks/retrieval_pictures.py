"""``dhm eval --rank-images DIR``: for a split of a re-ID run, the ranked gallery of its worst queries (lowest AP)
and of a seeded sample of queries, drawn as strips (:mod:`dhm.retrieval.pictures`), junk (same identity and
camera, the query itself) left out as the metrics leave it out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..retrieval import average_precisions, distance
from ..retrieval.pictures import BLUE, Cell, draw_strips, frame


def _image(source: Any, index: int) -> Any:
    """Image ``index`` of a split's source: decoded tensors, or a file (opened for display)."""
    if hasattr(source, "images"):
        return source.images[index]
    from PIL import Image

    return Image.open(source.files[index])


def write_rank_images(
    feats: Tensor,
    pids: Tensor,
    cams: Tensor,
    queries: Tensor,
    gallery: Tensor,
    source: Any,
    out_dir: str | Path,
    count: int = 8,
    top_k: int = 10,
) -> list[Path]:
    """``worst.png`` (the ``count`` queries of lowest AP) and ``sample.png`` (``count`` queries drawn with seed 0)
    in ``out_dir``; ``queries`` / ``gallery`` are boolean masks over the split's rows (``source``'s order)."""
    q_rows, g_rows = torch.nonzero(queries).flatten(), torch.nonzero(gallery).flatten()
    dist = distance(feats[q_rows], feats[g_rows], "cosine")
    ap = average_precisions(dist, pids[q_rows], pids[g_rows], cams[q_rows], cams[g_rows])
    junk = (pids[q_rows][:, None] == pids[g_rows][None]) & (cams[q_rows][:, None] == cams[g_rows][None])
    shown = dist.masked_fill(junk, float("inf"))
    valid = torch.nonzero(~ap.isnan()).flatten()
    worst = valid[torch.argsort(ap[valid], stable=True)[:count]]
    sample = valid[torch.randperm(len(valid), generator=torch.Generator().manual_seed(0))[:count]]
    k = max(1, min(top_k, len(g_rows)))
    first = _image(source, int(q_rows[0]))
    height, width = (first.shape[-2], first.shape[-1]) if isinstance(first, Tensor) else (first.height, first.width)
    paths = []
    for name, chosen in (("worst", worst), ("sample", sample)):
        strips = []
        for row in chosen.tolist():
            qid = int(pids[q_rows[row]])
            cells = [Cell(_image(source, int(q_rows[row])), BLUE, f"AP {100 * float(ap[row]):.1f}%")]
            values, cols = shown[row].topk(k, largest=False)
            for rank, (value, col) in enumerate(zip(values.tolist(), cols.tolist()), 1):
                if value != float("inf"):
                    g = int(g_rows[col])
                    cells.append(Cell(_image(source, g), frame(qid, int(pids[g])), f"{rank}: {value:.3f}"))
            strips.append(cells)
        paths.append(draw_strips(strips, Path(out_dir) / f"{name}.png", aspect=width / height))
    return paths
