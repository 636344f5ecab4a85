"""Retrieval metrics under the re-ID convention of Market-1501 (the one torchreid, fast-reid and BoT share).

For each query the gallery is ranked by distance (ascending; equal distances in gallery order, as a stable sort
gives). Gallery images with the query's identity **and** camera are removed (junk); distractors (any other
identity, 0000 included) stay as wrong matches. A query left without a true match is skipped. CMC is the
first-match curve (``cmc[k]``: the fraction of valid queries whose first true match is within rank k + 1), AP
the non-interpolated mean of the precision at each true match, mAP its mean over the valid queries, mINP the
mean of (true matches) / (rank of the last one).

Nothing is fully sorted: only the true matches are (by distance, ties by gallery index, as one integer key); one
comparison pass finds the images no farther than each query's last match, and a binary search among the
matches places each of them, which gives every match's rank exactly. The cost is one pass over the distances plus
a logarithmic step for the images before the last match: small for a trained model, at most half the matrix for
random features. Work is done in blocks of queries on the distances' device, so memory stays bounded.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .distance import distance, query_blocks

BLOCK = 1 << 21  # distances per block of queries when ranking (a few MB: the passes over a block stay in cache)


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


def _order_keys(d: Tensor) -> Tensor:
    """float32 distances as int64 keys in [0, 2^32) with the same order (negative values included; -0.0 is +0.0)."""
    bits = (d.float() + 0.0).contiguous().view(torch.int32).long()
    return torch.where(bits >= 0, bits + (1 << 31), -1 - bits)


def _block_ranks(
    dist: Tensor, q_pids: Tensor, q_camids: Tensor, gallery: Gallery, nonneg: bool = False
) -> tuple[Tensor, Tensor]:
    """For a block of queries: the 1-based ranks (among valid gallery images) of every true match, ascending,
    padded with 0 (B, M), and the number of true matches (B,).

    Each image is one int64 key (query row, distance, gallery index), so "ranks before" is one integer compare
    and ties fall in gallery order. The true matches' keys, sorted, are the buckets; every image of another
    identity no farther than its query's last match (one comparison pass finds them) is placed among them by a
    binary search, and the counts per bucket, summed, give each match's rank. Nothing else is sorted.
    ``nonneg``: every distance is >= 0, so the float bits order them as they are."""
    rows, size = len(dist), len(gallery.pids)
    same, real = gallery.same_identity(q_pids)  # (B, S)
    match = real & (gallery.cams[same] != q_camids[:, None])
    counts = match.sum(1)
    width = int(counts.max()) if rows else 0
    if width == 0:
        return torch.zeros(rows, 0, dtype=torch.long, device=dist.device), counts
    col_bits, row_bits = max(1, (size - 1).bit_length()), max(1, (rows - 1).bit_length())
    if col_bits + row_bits + 32 > 63:
        raise ValueError(f"a block of {rows} queries x {size} gallery images is too large for one key")

    def keys(row: Tensor, d: Tensor, col: Tensor) -> Tensor:
        order = (d + 0.0).view(torch.int32).long() if nonneg else _order_keys(d)
        return (row << (32 + col_bits)) | (order << col_bits) | col

    # The matches of each row in rank order (by key), flattened row by row: sorted as a whole.
    row_of = torch.arange(rows, device=dist.device)[:, None].expand_as(same)
    m_row, m_col = row_of[match], same[match]
    match_keys = torch.sort(keys(m_row, dist[m_row, m_col], m_col)).values
    start = counts.cumsum(0) - counts  # each row's first slot
    end = start + counts
    last_key = match_keys[(end - 1).clamp_min(0)]
    last_d = torch.where(counts > 0, dist.gather(1, (last_key & ((1 << col_bits) - 1))[:, None])[:, 0], -torch.inf)

    def slots(row: Tensor, col: Tensor, d: Tensor) -> Tensor:
        """The first match each image ranks before (images after their row's last match left out)."""
        slot = torch.searchsorted(match_keys, keys(row, d, col))
        return slot[slot < end[row]]

    # Every image no farther than its row's last match, placed among the matches; then the same-identity ones
    # (the matches themselves and the junk) taken back out, so that only other identities are counted.
    flat = torch.nonzero((dist <= last_d[:, None]).view(-1)).squeeze(1)
    row = torch.div(flat, size, rounding_mode="floor")
    per_slot = torch.bincount(slots(row, flat - row * size, dist.view(-1)[flat]), minlength=len(match_keys))
    s_row, s_col = row_of[real], same[real]
    s_d = dist[s_row, s_col]
    near = s_d <= last_d[s_row]
    per_slot -= torch.bincount(slots(s_row[near], s_col[near], s_d[near]), minlength=len(match_keys))
    first = start.repeat_interleave(counts)
    before = per_slot.cumsum(0)
    before = before - (before - per_slot)[first]  # count within the row only
    position = torch.arange(len(match_keys), device=dist.device) - first
    ranks = torch.zeros(rows, width, dtype=torch.long, device=dist.device)
    ranks[torch.arange(rows, device=dist.device).repeat_interleave(counts), position] = before + position + 1
    return ranks, counts


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
    """Re-ID metrics of a (Q, G) distance matrix (a tensor or a NumPy array, any float dtype and layout; float64
    distances are ranked exactly): ``{"mAP", "cmc" (rank-1 first, ``max_rank`` long or the gallery's size),
    "mINP", "num_valid_queries"}`` (mAP, CMC and mINP as fractions in [0, 1]).

    Example:
        >>> result = evaluate(distance(qf, gf), q_pids, g_pids, q_camids, g_camids)
        >>> result["cmc"][0], result["mAP"]                      # rank-1, mAP
    """
    distmat = torch.as_tensor(distmat)  # a NumPy array too (torchreid's distmat)
    if not distmat.is_floating_point() or distmat.dtype in (torch.float16, torch.bfloat16):
        distmat = distmat.float()  # exact
    dev = distmat.device
    q_pids, g_pids, q_camids, g_camids = (torch.as_tensor(t, device=dev) for t in (q_pids, g_pids, q_camids, g_camids))
    low = _check(distmat, q_pids, g_pids, q_camids, g_camids)
    gallery = Gallery(g_pids, g_camids)
    blocks = query_blocks(len(q_pids), len(g_pids), BLOCK)
    parts = []
    for sl in blocks:
        block, nonneg = _float32_order(distmat[sl], low >= 0)
        parts.append(_block_ranks(block, q_pids[sl], q_camids[sl], gallery, nonneg))
    return _summarise(*_join(parts), max_rank, len(g_pids))


def average_precisions(distmat: Tensor, q_pids: Tensor, g_pids: Tensor, q_camids: Tensor, g_camids: Tensor) -> Tensor:
    """Each query's AP (float64, in [0, 1]; NaN for a query without a true match), by the ranks :func:`evaluate`
    computes: its mean over the valid queries is ``evaluate(...)["mAP"]``."""
    distmat = torch.as_tensor(distmat)
    if not distmat.is_floating_point() or distmat.dtype in (torch.float16, torch.bfloat16):
        distmat = distmat.float()
    low = _check(distmat, q_pids, g_pids, q_camids, g_camids)
    gallery = Gallery(g_pids, g_camids)
    parts = []
    for sl in query_blocks(len(q_pids), len(g_pids), BLOCK):
        block, nonneg = _float32_order(distmat[sl], low >= 0)
        parts.append(_block_ranks(block, q_pids[sl], q_camids[sl], gallery, nonneg))
    ranks, counts = _join(parts)
    position = torch.arange(1, ranks.shape[1] + 1, device=ranks.device, dtype=torch.float64)
    precision = torch.where(ranks > 0, position / ranks.clamp_min(1).double(), torch.zeros_like(position))
    ap = precision.sum(1) / counts.double().clamp_min(1)
    return torch.where(counts > 0, ap, torch.full_like(ap, float("nan")))


def _float32_order(block: Tensor, nonneg: bool) -> tuple[Tensor, bool]:
    """A contiguous float32 block that orders (and ties) exactly as ``block`` does: float32 itself, or for wider
    floats (float64) each distance's dense rank within the block, exact in float32 below 2^24 distances."""
    if block.dtype == torch.float32:
        return block.contiguous(), nonneg
    if block.numel() >= 1 << 24:
        raise ValueError(f"a float64 distance block of {block.numel()} values is too large to rank exactly")
    return torch.unique(block, return_inverse=True)[1].to(torch.float32).contiguous(), True


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
        low = _check(block, q_pids[sl], g_pids, q_camids[sl], g_camids)
        parts.append(_block_ranks(block, q_pids[sl], q_camids[sl], gallery, low >= 0))
    return _summarise(*_join(parts), max_rank, len(g_pids))


def _join(parts: list[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
    width = max(r.shape[1] for r, _ in parts)
    ranks = torch.cat([torch.nn.functional.pad(r, (0, width - r.shape[1])) for r, _ in parts])
    return ranks, torch.cat([c for _, c in parts])


def _check(dist: Tensor, q_pids, g_pids, q_camids, g_camids) -> float:
    """ValueError for inconsistent shapes or non-finite distances; returns the smallest distance."""
    if dist.ndim != 2 or dist.shape != (len(q_pids), len(g_pids)):
        raise ValueError(f"distmat is {tuple(dist.shape)}, expected ({len(q_pids)}, {len(g_pids)}) from the ids")
    if len(q_camids) != len(q_pids) or len(g_camids) != len(g_pids):
        raise ValueError("camera ids must have one entry per query and per gallery image")
    if not dist.numel():
        return 0.0
    low, high = (float(v) for v in torch.aminmax(dist))  # NaN propagates
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError("distmat holds non-finite distances")
    return low
