"""Retrieval metrics under the re-ID convention of Market-1501 (the one torchreid, fast-reid and BoT share).

For each query the gallery is ranked by distance (ascending; equal distances in gallery order, as a stable sort
gives). Gallery images with the query's identity **and** camera are removed (junk); distractors (any other
identity, 0000 included) stay as wrong matches. A query left without a true match is skipped. CMC is the
first-match curve (``cmc[k]``: the fraction of valid queries whose first true match is within rank k + 1), AP
the non-interpolated mean of the precision at each true match, mAP its mean over the valid queries, mINP the
mean of (true matches) / (rank of the last one).

Nothing is fully sorted: per query, only the true matches are sorted (by distance, ties by gallery index); one
comparison pass finds the images no farther than the last match, and only those are compared with the matches,
which gives each match's rank exactly. The cost therefore follows how far the last true match lies: small for a
trained model, up to the whole gallery for random features. Work is done in blocks of queries on the distances'
device, so memory stays bounded.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .distance import distance, query_blocks

FULL_SORT_FRACTION = 8  # a block sorts its rows when more than 1/8 of its images rank before a last match


class Gallery:
    """The gallery's identities grouped (a sorted index per identity), so that a query's same-identity images are
    gathered without comparing it with the whole gallery."""

    def __init__(self, g_pids: Tensor, g_camids: Tensor) -> None:
        self.pids, self.cams = g_pids, g_camids
        self.order = torch.argsort(g_pids, stable=True)
        self.ids, self.sizes = torch.unique_consecutive(g_pids[self.order], return_counts=True)
        self.starts = self.sizes.cumsum(0) - self.sizes

    def same_identity(self, q_pids: Tensor) -> tuple[Tensor, Tensor]:
        """(B, S) gallery indices of each query's identity and the mask of the real ones (padding is False)."""
        slot = torch.searchsorted(self.ids, q_pids).clamp_max(len(self.ids) - 1)
        found = self.ids[slot] == q_pids
        sizes = torch.where(found, self.sizes[slot], torch.zeros_like(slot))
        width = int(sizes.max()) if len(sizes) else 0
        offsets = torch.arange(width, device=q_pids.device)
        real = offsets[None] < sizes[:, None]
        index = (self.starts[slot][:, None] + offsets[None]).clamp_max(len(self.order) - 1)
        return self.order[index], real


def _block_ranks(dist: Tensor, q_pids: Tensor, q_camids: Tensor, gallery: Gallery) -> tuple[Tensor, Tensor]:
    """For a block of queries: the 1-based ranks (among valid gallery images) of every true match, ascending,
    padded with 0 (B, M), and the number of true matches (B,).

    Only the images that can rank before a query's last true match are looked at (one comparison pass over the
    block), and each is compared with that query's few matches: nothing is sorted but the matches."""
    rows = len(dist)
    same, real = gallery.same_identity(q_pids)  # (B, S)
    match = real & (gallery.cams[same] != q_camids[:, None])
    counts = match.sum(1)
    width = int(counts.max()) if rows else 0
    if width == 0:
        return torch.zeros(rows, 0, dtype=torch.long, device=dist.device), counts
    # The matches of each row in rank order: by distance, then by gallery index (a stable sort).
    inf = torch.tensor(float("inf"), device=dist.device)
    match_d = torch.where(match, dist.gather(1, same), inf)
    match_i = torch.where(match, same, torch.full_like(same, len(gallery.pids)))
    order = torch.argsort(match_i, dim=1)  # index order first, then a stable sort by distance keeps it for ties
    match_d, match_i = match_d.gather(1, order), match_i.gather(1, order)
    order = torch.argsort(match_d, dim=1, stable=True)[:, :width]
    match_d, match_i = match_d.gather(1, order), match_i.gather(1, order)
    last = match_d.gather(1, (counts - 1).clamp_min(0)[:, None])  # the farthest match (inf-free: count >= 1)
    last = torch.where(counts[:, None] > 0, last, torch.full_like(last, -inf))
    # Candidates: images no farther than the last match; those of the query's identity are matches or junk.
    near = dist <= last
    if int(near.sum()) > rows * len(gallery.pids) // FULL_SORT_FRACTION:  # far last matches: sorting is cheaper
        return _sorted_ranks(dist, q_pids, q_camids, gallery, width), counts
    row, col = torch.nonzero(near, as_tuple=True)
    negative = gallery.pids[col] != q_pids[row]
    row, col = row[negative], col[negative]
    before = torch.zeros(rows, width, dtype=torch.long, device=dist.device)
    step = max(1, (1 << 22) // width)
    for start in range(0, len(row), step):  # (candidates, M) comparisons, in slices
        r, c = row[start : start + step], col[start : start + step]
        d = dist[r, c][:, None]
        ahead = (d < match_d[r]) | ((d == match_d[r]) & (c[:, None] < match_i[r]))
        before.index_add_(0, r, ahead.long())
    position = torch.arange(1, width + 1, device=dist.device)
    ranks = before + position
    return torch.where(position[None] <= counts[:, None], ranks, torch.zeros_like(ranks)), counts


def _sorted_ranks(dist: Tensor, q_pids: Tensor, q_camids: Tensor, gallery: Gallery, width: int) -> Tensor:
    """The match ranks of :func:`_block_ranks` from a stable sort of every row (for blocks whose last matches lie
    far down the list, random features for one)."""
    order = torch.argsort(dist, dim=1, stable=True)
    same = gallery.pids[order] == q_pids[:, None]
    match = same & (gallery.cams[order] != q_camids[:, None])
    valid_rank = (~(same & ~match)).cumsum(1)  # 1-based rank among the valid images (junk removed)
    row, col = torch.nonzero(match, as_tuple=True)
    ordinal = match.cumsum(1)[row, col] - 1
    ranks = torch.zeros(len(dist), width, dtype=torch.long, device=dist.device)
    ranks[row, ordinal] = valid_rank[row, col]
    return ranks


def _summarise(ranks: Tensor, counts: Tensor, max_rank: int, gallery: int) -> dict:
    """mAP, CMC, mINP over the valid queries from their match ranks."""
    valid = counts > 0
    if not bool(valid.any()):
        raise ValueError("no query has a true match in the gallery (after removing same-identity, same-camera images)")
    ranks, counts = ranks[valid], counts[valid]
    width = ranks.shape[1]
    position = torch.arange(1, width + 1, device=ranks.device, dtype=torch.float64)
    present = ranks > 0
    precision = torch.where(present, position / ranks.clamp_min(1).double(), torch.zeros_like(position))
    ap = precision.sum(1) / counts.double()
    last = ranks.gather(1, (counts - 1)[:, None]).squeeze(1).double()
    inp = counts.double() / last
    max_rank = min(max_rank, gallery)
    first = ranks[:, 0]
    cmc = (first[:, None] <= torch.arange(1, max_rank + 1, device=ranks.device)[None]).double().mean(0)
    return {
        "mAP": float(ap.mean()),
        "cmc": cmc.cpu().tolist(),
        "mINP": float(inp.mean()),
        "num_valid_queries": int(valid.sum()),
    }


def evaluate(
    distmat: Tensor, q_pids: Tensor, g_pids: Tensor, q_camids: Tensor, g_camids: Tensor, max_rank: int = 50
) -> dict:
    """Re-ID metrics of a (Q, G) distance matrix: ``{"mAP", "cmc" (rank-1 first, ``max_rank`` long or the
    gallery's size), "mINP", "num_valid_queries"}`` (mAP, CMC and mINP as fractions in [0, 1]).

    Example:
        >>> result = evaluate(distance(qf, gf), q_pids, g_pids, q_camids, g_camids)
        >>> result["cmc"][0], result["mAP"]                      # rank-1, mAP
    """
    dev = distmat.device
    q_pids, g_pids, q_camids, g_camids = (torch.as_tensor(t, device=dev) for t in (q_pids, g_pids, q_camids, g_camids))
    _check(distmat, q_pids, g_pids, q_camids, g_camids)
    gallery = Gallery(g_pids, g_camids)
    parts = [
        _block_ranks(distmat[sl], q_pids[sl], q_camids[sl], gallery) for sl in query_blocks(len(q_pids), len(g_pids))
    ]
    return _summarise(*_join(parts), max_rank, len(g_pids))


def evaluate_features(
    qf: Tensor,
    gf: Tensor,
    q_pids: Tensor,
    g_pids: Tensor,
    q_camids: Tensor,
    g_camids: Tensor,
    metric: str = "euclidean",
    max_rank: int = 50,
) -> dict:
    """:func:`evaluate` from features, the distances computed block by block on the features' device (the full
    matrix is never held)."""
    dev = qf.device
    q_pids, g_pids, q_camids, g_camids = (torch.as_tensor(t, device=dev) for t in (q_pids, g_pids, q_camids, g_camids))
    gallery, parts = Gallery(g_pids, g_camids), []
    for sl in query_blocks(len(qf), len(gf)):
        block = distance(qf[sl], gf, metric)
        _check(block, q_pids[sl], g_pids, q_camids[sl], g_camids)
        parts.append(_block_ranks(block, q_pids[sl], q_camids[sl], gallery))
    return _summarise(*_join(parts), max_rank, len(g_pids))


def _join(parts: list[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
    width = max(r.shape[1] for r, _ in parts)
    ranks = torch.cat([torch.nn.functional.pad(r, (0, width - r.shape[1])) for r, _ in parts])
    return ranks, torch.cat([c for _, c in parts])


def _check(dist: Tensor, q_pids, g_pids, q_camids, g_camids) -> None:
    if dist.ndim != 2 or dist.shape != (len(q_pids), len(g_pids)):
        raise ValueError(f"distmat is {tuple(dist.shape)}, expected ({len(q_pids)}, {len(g_pids)}) from the ids")
    if len(q_camids) != len(q_pids) or len(g_camids) != len(g_pids):
        raise ValueError("camera ids must have one entry per query and per gallery image")
    if not bool(torch.isfinite(dist).all()):
        raise ValueError("distmat holds non-finite distances")
