"""k-reciprocal re-ranking against a per-image loop written from the paper's definitions (Zhong et al. 2017), and
its effect on a retrieval problem."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dhm.retrieval import evaluate, evaluate_features, rerank


def _reference(qf: np.ndarray, gf: np.ndarray | None, k1: int, k2: int, lam: float) -> np.ndarray:
    feats = (qf if gf is None else np.concatenate([qf, gf])).astype(np.float64)
    n, q = len(feats), (0 if gf is None else len(qf))
    rows = range(n) if gf is None else range(q)
    d = ((feats[:, None] - feats[None]) ** 2).sum(-1)
    d = d / d.max(1, keepdims=True)
    rank = np.argsort(d, axis=1, kind="stable")

    def recip(i: int, k: int) -> set[int]:
        return {int(j) for j in rank[i, : k + 1] if i in rank[j, : k + 1]}

    v = np.zeros((n, n))
    for i in range(n):
        base = recip(i, k1)
        expanded = set(base)
        for c in base:
            half = recip(c, round(k1 / 2))
            if len(half & base) > 2 / 3 * len(half):
                expanded |= half
        idx = sorted(expanded)
        w = np.exp(-d[i, idx])
        v[i, idx] = w / w.sum()
    v = np.stack([v[rank[i, :k2]].mean(0) for i in range(n)])
    jac = np.array(
        [[1 - np.minimum(v[i], v[j]).sum() / np.maximum(v[i], v[j]).sum() for j in range(q, n)] for i in rows]
    )
    return (1 - lam) * jac + lam * d[list(rows)][:, q:]


@pytest.mark.parametrize("k1,k2,lam", [(20, 6, 0.3), (5, 1, 0.0), (3, 3, 1.0)])
def test_rerank_matches_the_definition(k1, k2, lam):
    g = torch.Generator().manual_seed(k1)
    centers = torch.randn(6, 8, generator=g)
    labels = torch.randint(0, 6, (70,), generator=g)
    feats = centers[labels] + 0.7 * torch.randn(70, 8, generator=g)
    qf, gf = feats[:15], feats[15:]
    ours = rerank(qf, gf, k1, k2, lam).double().numpy()
    np.testing.assert_allclose(ours, _reference(qf.numpy(), gf.numpy(), k1, k2, lam), atol=2e-5)
    square = rerank(feats, None, k1, k2, lam).double().numpy()  # one set against itself (all-vs-all splits)
    np.testing.assert_allclose(square, _reference(feats.numpy(), None, k1, k2, lam), atol=2e-5)


def test_rerank_feeds_the_evaluator_and_helps_on_clustered_features():
    g = torch.Generator().manual_seed(3)
    centers = torch.randn(20, 16, generator=g)
    pids = torch.arange(20).repeat_interleave(8)
    cams = torch.arange(8).repeat(20) % 2
    feats = centers[pids] + 1.2 * torch.randn(160, 16, generator=g)
    q = cams == 0
    plain = evaluate_features(feats[q], feats[~q], pids[q], pids[~q], cams[q], cams[~q])
    dist = rerank(feats[q], feats[~q], k1=6, k2=3)
    ranked = evaluate(dist, pids[q], pids[~q], cams[q], cams[~q])
    assert dist.shape == (80, 80) and ranked["mAP"] > plain["mAP"]
    with pytest.raises(ValueError, match="k1, k2"):
        rerank(feats[q], feats[~q], k1=0)
