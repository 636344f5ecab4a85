"""The re-ID evaluator: hand-computed AP and CMC on small cases (ties, distractors, junk, a query without a
match, a query whose only match shares its camera), a per-query NumPy loop (the convention of torchreid,
fast-reid and BoT, with a stable sort) and torchmetrics' retrieval metrics on random problems."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dhm.retrieval import distance, evaluate, evaluate_features
from dhm.retrieval import metrics as M


def numpy_loop(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=50):
    """The anchors' per-query loop (torchreid's eval_market1501), ties in gallery order."""
    num_q, num_g = distmat.shape
    max_rank = min(max_rank, num_g)
    indices = np.argsort(distmat, axis=1, kind="stable")
    matches = (g_pids[indices] == q_pids[:, None]).astype(np.int32)
    all_cmc, all_ap, all_inp = [], [], []
    for q in range(num_q):
        order = indices[q]
        remove = (g_pids[order] == q_pids[q]) & (g_camids[order] == q_camids[q])
        raw = matches[q][~remove]
        if not raw.any():
            continue
        cmc = raw.cumsum()
        pos = np.where(raw == 1)[0]
        all_inp.append(cmc[pos.max()] / (pos.max() + 1.0))
        cmc[cmc > 1] = 1
        all_cmc.append(cmc[:max_rank])
        tmp = raw.cumsum() / (np.arange(len(raw)) + 1.0)
        all_ap.append((tmp * raw).sum() / raw.sum())
    return np.asarray(all_cmc, dtype=np.float64).mean(0), float(np.mean(all_ap)), float(np.mean(all_inp)), len(all_ap)


def _t(*xs):
    return [torch.as_tensor(x) for x in xs]


def test_hand_computed_ap_cmc_with_junk_distractors_and_ties():
    # query 0: pid 1 cam 1. Gallery order by distance: g0 pid 1 cam 1 (junk), g1 pid 0 (distractor),
    # g2 pid 1 cam 2 (match), g3 pid 2, g4 pid 1 cam 2 (match, tied with g3 but after it in gallery order).
    d = torch.tensor([[0.1, 0.2, 0.3, 0.4, 0.4]])
    g_pids, g_cams = torch.tensor([1, 0, 1, 2, 1]), torch.tensor([1, 2, 2, 1, 2])
    r = evaluate(d, *_t([1], g_pids, [1], g_cams), max_rank=4)
    # valid list: g1 (x), g2 (hit at rank 2), g3 (x), g4 (hit at rank 4): AP = (1/2 + 2/4) / 2
    assert r["mAP"] == pytest.approx(0.5) and r["cmc"] == [0.0, 1.0, 1.0, 1.0]
    assert r["mINP"] == pytest.approx(2 / 4) and r["num_valid_queries"] == 1
    # swap the tie: the match now comes first in gallery order, so it ranks before the distractor
    r = evaluate(d, *_t([1], [1, 0, 1, 1, 2], [1], [1, 2, 2, 2, 1]), max_rank=4)
    assert r["mAP"] == pytest.approx((1 / 2 + 2 / 3) / 2) and r["cmc"][:2] == [0.0, 1.0]


def test_queries_without_a_valid_match_are_skipped():
    d = torch.tensor([[0.5, 0.1, 0.9], [0.2, 0.3, 0.1], [0.4, 0.4, 0.4]])
    q_pids, q_cams = torch.tensor([7, 8, 9]), torch.tensor([1, 1, 1])
    g_pids, g_cams = torch.tensor([7, 8, 8]), torch.tensor([2, 1, 2])
    # query 0: one match (g0) at rank 2 of 3; query 1: its only cam-2 match g2 at rank 1 (g1 is junk);
    # query 2: no image of pid 9 at all -> skipped
    r = evaluate(d, q_pids, g_pids, q_cams, g_cams)
    assert r["num_valid_queries"] == 2 and r["mAP"] == pytest.approx((1 / 2 + 1) / 2)
    assert len(r["cmc"]) == 3 and r["cmc"] == [0.5, 1.0, 1.0]
    with pytest.raises(ValueError, match="no query has a true match"):  # its only match shares its camera
        evaluate(d[:1], *_t([8], [7, 8, 7], [1], [2, 1, 2]))


def _random_problem(seed, q=40, g=300, ids=25, cams=4, dim=8):
    rng = np.random.default_rng(seed)
    g_pids = rng.integers(0, ids, g)
    g_pids[:10] = 0  # distractor-like identity that no query has
    q_pids = rng.integers(1, ids, q)
    qf = torch.tensor(rng.normal(size=(q, dim)), dtype=torch.float32)
    centres = rng.normal(size=(ids, dim))
    gf = torch.tensor(centres[g_pids] * 0.8 + rng.normal(size=(g, dim)), dtype=torch.float32)
    qf = torch.tensor(centres[q_pids] * 0.8, dtype=torch.float32) + qf * 0.7
    return qf, gf, q_pids, g_pids, rng.integers(0, cams, q), rng.integers(0, cams, g)


@pytest.mark.parametrize("seed", range(8))
def test_matches_the_per_query_loop_on_random_problems(seed, monkeypatch):
    qf, gf, q_pids, g_pids, q_cams, g_cams = _random_problem(seed)
    dist = distance(qf, gf)
    if seed % 2:  # ties: distances rounded to a coarse grid
        dist = (dist * 4).round() / 4
    cmc, ap, inp, valid = numpy_loop(dist.numpy(), q_pids, g_pids, q_cams, g_cams)
    if seed >= 4:  # negative distances (a shifted metric) and -0.0 must keep their order
        dist = dist - dist.median()
        dist[dist == 0] = -0.0
    monkeypatch.setattr(M, "query_blocks", lambda q, g, budget=0: (slice(i, min(q, i + 7)) for i in range(0, q, 7)))
    got = evaluate(dist, *_t(q_pids, g_pids, q_cams, g_cams))  # in blocks of 7 queries
    assert got["num_valid_queries"] == valid
    np.testing.assert_allclose(got["cmc"], cmc, atol=1e-12)
    assert got["mAP"] == pytest.approx(ap, abs=1e-12) and got["mINP"] == pytest.approx(inp, abs=1e-12)
    if seed % 2 == 0:
        from_features = evaluate_features(qf, gf, *_t(q_pids, g_pids, q_cams, g_cams))
        assert from_features["num_valid_queries"] == valid
        np.testing.assert_allclose(from_features["cmc"], cmc, atol=1e-12)
        assert from_features["mAP"] == pytest.approx(ap, abs=1e-6)


def test_agrees_with_torchmetrics_retrieval_metrics(torchvision):
    tm = pytest.importorskip("torchmetrics.retrieval", reason="torchmetrics is not installed")
    qf, gf, q_pids, g_pids, q_cams, g_cams = _random_problem(11, q=30, g=200)
    dist = distance(qf, gf)
    got = evaluate(dist, *_t(q_pids, g_pids, q_cams, g_cams), max_rank=10)
    keep = ~((q_pids[:, None] == g_pids[None]) & (q_cams[:, None] == g_cams[None]))  # junk removed
    rows, cols = np.nonzero(keep)
    # torchmetrics ranks by score, descending: a positive score, larger for nearer images
    scores = (dist.max() + 1 - dist)[rows, cols]
    target = torch.as_tensor(q_pids[rows] == g_pids[cols])
    indexes = torch.as_tensor(rows)
    ap = tm.RetrievalMAP(empty_target_action="skip")(scores, target, indexes=indexes)
    hit5 = tm.RetrievalHitRate(top_k=5, empty_target_action="skip")(scores, target, indexes=indexes)
    assert got["mAP"] == pytest.approx(float(ap), abs=1e-6) and got["cmc"][4] == pytest.approx(float(hit5), abs=1e-6)


def test_bad_shapes_and_values_are_refused():
    with pytest.raises(ValueError, match="expected"):
        evaluate(torch.zeros(2, 3), *_t([1, 2], [1, 2], [1, 1], [2, 2]))
    with pytest.raises(ValueError, match="non-finite"):
        evaluate(torch.tensor([[float("nan"), 1.0]]), *_t([1], [1, 2], [1], [2, 2]))
    with pytest.raises(ValueError, match="metric"):
        distance(torch.zeros(1, 2), torch.zeros(1, 2), "manhattan")


def test_the_evaluator_benchmark_runs_in_its_tiny_mode(capsys):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "retrieval_eval.py"
    spec = importlib.util.spec_from_file_location("retrieval_eval", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = module.main(["--tiny"])
    assert result["same_numbers"] and result["metrics"]["valid"] == 60


def test_any_float_dtype_layout_and_numpy_input_is_evaluated_as_torchreid_would():
    """What torchreid users hand in: float64 (exactly ranked, even below float32's resolution), float16,
    bfloat16, a transposed view and NumPy arrays (distances and ids) all give the per-query loop's result."""
    g = torch.Generator().manual_seed(3)
    d64 = torch.rand(30, 120, generator=g, dtype=torch.float64)
    d64[:, 1::2] = d64[:, 0::2] - 1e-12  # float32 would tie these and keep gallery order; float64 reverses it
    q_pids, g_pids = torch.randint(0, 12, (30,), generator=g), torch.randint(0, 12, (120,), generator=g)
    q_cams, g_cams = torch.randint(0, 3, (30,), generator=g), torch.randint(0, 3, (120,), generator=g)
    ids = [x.numpy() for x in (q_pids, g_pids, q_cams, g_cams)]
    for dist in (d64, d64.numpy(), d64.t().contiguous().t()):
        cmc, mean_ap, minp, valid = numpy_loop(np.asarray(dist), *ids)
        r = evaluate(dist, *ids)
        assert r["mAP"] == pytest.approx(mean_ap, abs=1e-12) and r["mINP"] == pytest.approx(minp, abs=1e-12)
        assert np.allclose(r["cmc"], cmc[: len(r["cmc"])]) and r["num_valid_queries"] == valid
    for low in (torch.float16, torch.bfloat16):
        rounded = d64.to(low)
        cmc, mean_ap, _, _ = numpy_loop(rounded.double().numpy(), *ids)  # ties as the rounded values tie
        assert evaluate(rounded, *ids)["mAP"] == pytest.approx(mean_ap, abs=1e-12)


def test_per_query_average_precisions_average_to_the_map():
    """dhm.retrieval.average_precisions: each query's AP by the evaluator's own ranks (what --rank-images sorts)."""
    from dhm.retrieval import average_precisions

    g = torch.Generator().manual_seed(5)
    dist = torch.rand(30, 80, generator=g)
    q_pids, g_pids = torch.randint(0, 12, (30,), generator=g), torch.randint(0, 12, (80,), generator=g)
    q_cams, g_cams = torch.randint(0, 3, (30,), generator=g), torch.randint(0, 3, (80,), generator=g)
    ap = average_precisions(dist, q_pids, g_pids, q_cams, g_cams)
    valid = ~ap.isnan()
    assert bool(valid.any())
    result = evaluate(dist, q_pids, g_pids, q_cams, g_cams)
    assert float(ap[valid].mean()) == pytest.approx(result["mAP"], abs=1e-12)
    assert int(valid.sum()) == result["num_valid_queries"]
