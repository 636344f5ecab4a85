"""The re-ID evaluation from features against the per-query NumPy loop that torchreid, fast-reid and BoT share.

Synthetic features with identity structure (each identity a random centre, every image its centre plus
Gaussian noise of std ``--noise``; ``--noise`` sets how far the hardest true match lies, which is what the
evaluator's cost follows). Both sides get the same float32 distance matrix; the loop is torchreid's
``eval_market1501`` with a stable sort. Prints and writes (``--json``) the times, the ratio and the peak memory.

    python benchmarks/retrieval_eval.py --noise 3 --json out.json                       # Market size (the defaults)
    python benchmarks/retrieval_eval.py --queries 11659 --gallery 82161 --ids 3060 --cams 15 --dim 256 \
        --noise 1.1 --loop-queries 1500 --json out.json                                # MSMT17 size
    python benchmarks/retrieval_eval.py --tiny                                          # seconds

``--loop-queries N`` times the loop (and the evaluator from distances, for the same numbers) on the first N queries
only, where the whole distance matrix and the loop's sorted indices would not fit beside each other; the evaluator
from features always runs on the whole problem, first, so that its peak memory is its own.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_retrieval import numpy_loop  # the reference loop lives with the tests that check it

from dhm.retrieval import distance, evaluate, evaluate_features


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--queries", type=int, default=3368)
    p.add_argument("--gallery", type=int, default=15913)
    p.add_argument("--ids", type=int, default=751)
    p.add_argument("--cams", type=int, default=6)
    p.add_argument("--dim", type=int, default=2048)
    p.add_argument("--noise", type=float, default=1.0)
    p.add_argument("--loop-queries", type=int, default=0, help="compare with the loop on the first N queries (0 = all)")
    p.add_argument("--tiny", action="store_true", help="a seconds-long check of the script itself")
    p.add_argument("--json", default="")
    a = p.parse_args(argv)
    if a.tiny:
        a.queries, a.gallery, a.ids, a.dim = 60, 400, 30, 16
    g = torch.Generator().manual_seed(0)
    q_pids = torch.randint(1, a.ids, (a.queries,), generator=g)
    g_pids = torch.randint(0, a.ids, (a.gallery,), generator=g)
    q_cams = torch.randint(0, a.cams, (a.queries,), generator=g)
    g_cams = torch.randint(0, a.cams, (a.gallery,), generator=g)
    centres = torch.randn(a.ids, a.dim, generator=g)
    qf = centres[q_pids] + a.noise * torch.randn(a.queries, a.dim, generator=g)
    gf = centres[g_pids] + a.noise * torch.randn(a.gallery, a.dim, generator=g)
    ids = (q_pids, g_pids, q_cams, g_cams)

    rss0 = _rss_mb()
    t = time.perf_counter()
    ours_features = evaluate_features(qf, gf, *ids)
    t_features = time.perf_counter() - t
    rss_features = _rss_mb() - rss0
    n = a.loop_queries or a.queries
    qf, ids = qf[:n], (q_pids[:n], g_pids, q_cams[:n], g_cams)
    if n < a.queries:
        ours_features = evaluate_features(qf, gf, *ids)  # the same numbers on the compared queries
    t = time.perf_counter()
    dist = distance(qf, gf)
    t_distance = time.perf_counter() - t
    t = time.perf_counter()
    ours = evaluate(dist, *ids)
    t_ours = time.perf_counter() - t
    t = time.perf_counter()
    cmc, ap, inp, valid = numpy_loop(dist.numpy(), *(x.numpy() for x in ids))
    t_loop = time.perf_counter() - t
    same = (
        valid == ours["num_valid_queries"]
        and np.allclose(ours["cmc"], cmc, atol=1e-9)
        and abs(ours["mAP"] - ap) < 1e-9
        and abs(ours["mINP"] - inp) < 1e-9
        and abs(ours_features["mAP"] - ap) < 1e-6
    )
    result = {
        "problem": {k: getattr(a, k) for k in ("queries", "gallery", "ids", "cams", "dim", "noise", "loop_queries")},
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
        "metrics": {"mAP": ours["mAP"], "rank1": ours["cmc"][0], "mINP": ours["mINP"], "valid": valid},
        "same_numbers": bool(same),
        "seconds": {
            "distances": t_distance,
            "ours_from_distances": t_ours,
            "ours_from_features_all_queries": t_features,
            "numpy_loop_from_distances": t_loop,
        },
        "ratio_from_distances": t_loop / t_ours,
        "ratio_whole_from_features": (t_distance + t_loop) / (t_features * n / a.queries),  # per query
        "peak_rss_increase_mb_ours_from_features": rss_features,
        "distance_matrix_mb": dist.numel() * 4 / 2**20,
    }
    print(json.dumps(result, indent=2))
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=2) + "\n")
    if not same:
        raise SystemExit("the evaluator and the loop disagree")
    return result


if __name__ == "__main__":
    main()
