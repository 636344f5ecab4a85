"""k-reciprocal re-ranking (Zhong et al., CVPR 2017), the post-processing re-ID papers report as "+RK".

For every image of the query and gallery sets together: its k-reciprocal neighbours (``k1``; each in the other's
``k1 + 1`` nearest), expanded by the half-size (``round(k1 / 2)``) reciprocal sets of those neighbours that share
more than two thirds of their members with it; a weight vector V over all images (``exp(-d)`` on that set,
normalised to sum 1), averaged over the ``k2`` nearest images (local query expansion); the Jaccard distance of two
images ``1 - sum min(V_i, V_j) / sum max(V_i, V_j)``; the result ``(1 - lambda) * Jaccard + lambda * d``, with
``d`` the squared distance of each row divided by its row's largest.

Nothing here is looped per image: neighbour sets are index tensors, V is kept sparse (a row of indices and
weights per image) and the Jaccard overlaps are summed over the pairs of entries that share a column. It holds the
(Q + G)^2 distance matrix, so it suits Market-sized problems (19,281 images: 1.5 GB), not MSMT17's.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .distance import distance


def _reciprocal(rank: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Each image's ``k + 1`` nearest (N, k+1) and whether each is a k-reciprocal neighbour (it has the image among
    its own ``k + 1`` nearest)."""
    near = rank[:, : k + 1]
    own = torch.arange(len(rank), device=rank.device)[:, None, None]
    return near, (near[near] == own).any(-1)


def _dedupe_sum(index: Tensor, value: Tensor) -> tuple[Tensor, Tensor]:
    """Rows of (column index, value) with the values of repeated columns summed into the first copy (the others
    zeroed); entries with value 0 are padding."""
    order = torch.argsort(index, dim=1, stable=True)
    index, value = index.gather(1, order), value.gather(1, order)
    start = torch.ones_like(index, dtype=torch.bool)
    start[:, 1:] = index[:, 1:] != index[:, :-1]
    group = start.long().cumsum(1) - 1  # the run each entry belongs to
    summed = torch.zeros_like(value).scatter_add_(1, group, value)
    return index, torch.where(start, summed.gather(1, group), torch.zeros_like(value))


def _weights(dist: Tensor, rank: Tensor, k1: int) -> tuple[Tensor, Tensor]:
    """The sparse V: (N, M) column indices and weights (rows sum to 1)."""
    near, recip = _reciprocal(rank, k1)
    half_near, half_recip = _reciprocal(rank, round(k1 / 2))
    cand = half_near[near]  # (N, k1+1, h+1): each neighbour's half-size nearest
    cand_ok = half_recip[near] & recip[..., None]  # ... those reciprocal, for reciprocal neighbours only
    member = (cand[..., None] == near[:, None, None, :]) & recip[:, None, None, :]
    shared = (member.any(-1) & cand_ok).sum(-1)
    accept = shared.double() > 2.0 / 3.0 * cand_ok.sum(-1).double()  # (N, k1+1)
    extra_ok = cand_ok & accept[..., None]
    index = torch.cat([near, cand.flatten(1)], 1)
    valid = torch.cat([recip, extra_ok.flatten(1)], 1)
    index = torch.where(valid, index, torch.full_like(index, len(dist)))  # invalid entries sort last
    order = torch.argsort(index, dim=1)
    index, valid = index.gather(1, order), valid.gather(1, order)
    first = torch.ones_like(valid)
    first[:, 1:] = index[:, 1:] != index[:, :-1]
    valid = valid & first  # one entry per image
    safe = index.clamp_max(len(dist) - 1)
    weight = torch.where(valid, torch.exp(-dist.gather(1, safe)), torch.zeros((), dtype=dist.dtype, device=dist.device))
    return safe, weight / weight.sum(1, keepdim=True)


def _overlap(q_index: Tensor, q_value: Tensor, g_index: Tensor, g_value: Tensor, chunk: int = 1 << 22) -> Tensor:
    """``sum_k min(V_qk, V_gk)`` for every query row and gallery row (Q, G), over the pairs of nonzero entries
    that share a column (an inverted index of the gallery's entries by column)."""
    rows_q = torch.arange(len(q_index), device=q_index.device)[:, None].expand_as(q_index)
    keep = q_value > 0
    qi, qc, qv = rows_q[keep], q_index[keep], q_value[keep]
    rows_g = torch.arange(len(g_index), device=g_index.device)[:, None].expand_as(g_index)
    keep = g_value > 0
    gi, gc, gv = rows_g[keep], g_index[keep], g_value[keep]
    order = torch.argsort(gc)
    gi, gc, gv = gi[order], gc[order], gv[order]
    start = torch.searchsorted(gc, qc)
    count = torch.searchsorted(gc, qc, right=True) - start
    out = torch.zeros(len(q_index), len(g_index), dtype=q_value.dtype, device=q_value.device)
    ends = count.cumsum(0)
    begin = 0
    while begin < len(qc):  # slices of query entries whose pairs fit in ``chunk``
        stop = int(torch.searchsorted(ends, ends[begin] - count[begin] + chunk, right=True))
        stop = max(stop, begin + 1)
        c = count[begin:stop]
        owner = torch.repeat_interleave(torch.arange(begin, stop, device=qc.device), c)
        offset = torch.arange(len(owner), device=qc.device) - torch.repeat_interleave(c.cumsum(0) - c, c)
        g = start[owner] + offset
        flat = qi[owner] * len(g_index) + gi[g]
        out.view(-1).index_add_(0, flat, torch.minimum(qv[owner], gv[g]))
        begin = stop
    return out


def rerank(qf: Tensor, gf: Tensor | None, k1: int = 20, k2: int = 6, lambda_value: float = 0.3) -> Tensor:
    """The (Q, G) k-reciprocal re-ranked distances of query features ``qf`` and gallery features ``gf`` (rank them
    with :func:`dhm.retrieval.evaluate`), computed on the features' device; ``gf=None`` re-ranks one set against
    itself (Q, Q), for a split evaluated all against all.

    Example:
        >>> result = evaluate(rerank(qf, gf), q_pids, g_pids, q_camids, g_camids)
    """
    if k1 < 1 or k2 < 1 or not 0 <= lambda_value <= 1:
        raise ValueError(f"re-ranking needs k1, k2 >= 1 and lambda in [0, 1], got {k1}, {k2}, {lambda_value}")
    feats = (qf if gf is None else torch.cat([qf, gf])).float()
    q, n = (0 if gf is None else len(qf)), len(feats)
    dist = distance(feats, feats, "euclidean")
    dist = dist / dist.amax(1, keepdim=True).clamp_min(1e-12)
    k1, k2 = min(k1, n - 1), min(k2, n)
    rank = torch.topk(dist, min(n, max(k1 + 1, k2)), dim=1, largest=False).indices
    index, weight = _weights(dist, rank, k1)
    if k2 > 1:  # local query expansion: the mean of the k2 nearest images' V
        index = index[rank[:, :k2]].flatten(1)
        weight = weight[rank[:, :k2]].flatten(1) / k2
        index, weight = _dedupe_sum(index, weight)
    rows = slice(None) if gf is None else slice(None, q)
    overlap = _overlap(index[rows], weight[rows], index[q:], weight[q:])
    jaccard = 1 - overlap / (2 - overlap)
    return (1 - lambda_value) * jaccard + lambda_value * dist[rows, q:]
