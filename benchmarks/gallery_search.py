"""Searching a gallery index of a million embeddings (BENCHMARKS.md, "Gallery search").

Identity-structured embeddings (every identity a random centre on the sphere, every image its centre plus Gaussian
noise, L2-normalised; the queries drawn the same way from the same identities) stand for a trained re-ID model's.
For each backend of ``dhm.gallery.backends.SEARCHERS`` (torch exact, FAISS exact, FAISS approximate) it measures
the build time, the index memory, milliseconds per query at batch 1 and at batch ``--queries`` (1,000), and for the
approximate index its recall@10 against exact search. Phases run one after another and free their memory. Run it
alone on the machine; ``--tiny`` checks the whole path in seconds.

    python benchmarks/gallery_search.py --n 1000000 --dim 2048 --json benchmarks/results/cpu_gallery_search.json
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import resource
import statistics
import time

import torch
import torch.nn.functional as F


def cpu() -> str:
    with open("/proc/cpuinfo") as f:
        text = f.read()
    name = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")), "")
    bf16 = "native bf16" if ("avx512_bf16" in text or "amx_bf16" in text) else "no native bf16 (AVX2 only)"
    return f"{name or platform.processor()}, {torch.get_num_threads()} threads, {bf16}"


def embeddings(n: int, dim: int, ids: int, noise: float, seed: int, centres: torch.Tensor) -> torch.Tensor:
    """n L2-normalised float16 embeddings around ``centres`` (made in chunks: the float32 peak stays small)."""
    g = torch.Generator().manual_seed(seed)
    out = torch.empty(n, dim, dtype=torch.float16)
    for start in range(0, n, 65536):
        stop = min(n, start + 65536)
        who = torch.randint(0, ids, (stop - start,), generator=g)
        x = centres[who] + noise * torch.randn(stop - start, dim, generator=g) / dim**0.5
        out[start:stop] = F.normalize(x, dim=1).half()
    return out


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(name: str, make, gallery: torch.Tensor, queries: torch.Tensor, k: int, singles: int) -> tuple[dict, list]:
    """Build ``make(gallery)`` and time it at batch 1 and at the whole query batch; returns (row, top-k columns)."""
    start = time.perf_counter()
    searcher = make(gallery)
    build = time.perf_counter() - start
    one = []
    for i in range(singles):
        t = time.perf_counter()
        searcher.search(queries[i : i + 1], k)
        one.append(time.perf_counter() - t)
    t = time.perf_counter()
    _, cols = searcher.search(queries, k)
    batch = time.perf_counter() - t
    memory = None
    if hasattr(searcher, "index"):
        import faiss

        memory = len(faiss.serialize_index(searcher.index)) / 2**20
    elif hasattr(searcher, "gallery"):
        memory = searcher.gallery.numel() * searcher.gallery.element_size() / 2**20
    row = {
        "backend": name,
        "kind": getattr(searcher, "kind", "flat"),
        "build_s": build,
        "index_MB": memory,
        "ms_per_query_batch1": 1000 * statistics.median(one),
        "ms_per_query_batched": 1000 * batch / len(queries),
        "peak_rss_MB": peak_rss_mb(),
    }
    del searcher
    gc.collect()
    return row, cols.tolist()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--ids", type=int, default=100_000, help="identities (centres)")
    parser.add_argument("--noise", type=float, default=1.0, help="noise norm relative to the unit centres")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--singles", type=int, default=50, help="queries timed one at a time")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--backends", default="torch,faiss,faiss-approx")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--tiny", action="store_true", help="20,000 x 64: checks the path")
    args = parser.parse_args()
    if args.tiny:
        args.n, args.dim, args.ids, args.queries, args.singles = 20_000, 64, 2_000, 200, 10
    from dhm.gallery import backends

    g = torch.Generator().manual_seed(0)
    centres = F.normalize(torch.randn(args.ids, args.dim, generator=g), dim=1)
    start = time.perf_counter()
    gallery = embeddings(args.n, args.dim, args.ids, args.noise, 1, centres)
    queries = embeddings(args.queries, args.dim, args.ids, args.noise, 2, centres).float()
    del centres
    made = time.perf_counter() - start
    print(
        f"{args.n:,} x {args.dim} embeddings (float16, {gallery.numel() * 2 / 2**30:.2f} GiB) in {made:.0f} s; {cpu()}"
    )
    rows, exact = [], None
    for name in args.backends.split(","):
        row, cols = measure(name, backends.SEARCHERS.get(name), gallery, queries, args.k, args.singles)
        if backends.SEARCHERS.get(name).exact and exact is None:
            exact = cols
        if exact is not None:
            hits = sum(len(set(a) & set(b)) for a, b in zip(cols, exact))
            row["recall_at_k"] = hits / (args.k * len(queries))
        rows.append(row)
        print(json.dumps(row), flush=True)
    result = {"cpu": cpu(), "torch": torch.__version__, "args": vars(args), "rows": rows}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
