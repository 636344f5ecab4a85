"""Searching a gallery index of a million embeddings (BENCHMARKS.md, "Gallery search").

Identity-structured embeddings (every identity a random centre on the sphere, every image its centre plus Gaussian
noise of the same norm, L2-normalised: cosine about 0.5 within an identity, about 0 across; the queries drawn the same
way from the same identities) stand for a trained re-ID model's. Identities hold 20 images on average (Market-1501's
gallery about 26), so a query's 10 nearest images are its own identity's and recall@10 measures finding them, not
the order of unrelated near-zero similarities.
For each backend of ``dhm.gallery.backends.SEARCHERS`` (torch exact, FAISS exact, FAISS approximate) it measures the
build time, the index memory, milliseconds per query at batch 1 and at batch ``--queries`` (1,000), and for the
approximate index its recall@10 against exact search (an inverted-file index at every ``--nprobes``). Phases run one
after another and free their memory. Run it alone on the machine; ``--tiny`` checks the whole path in seconds.

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


def index_mb(searcher) -> float | None:
    """The search structure's bytes: FAISS's index, or the torch backend's float32 gallery."""
    if hasattr(searcher, "index"):
        import faiss

        flat = isinstance(searcher.index, faiss.IndexFlat)  # its bytes are its vectors (serialising copies them)
        size = searcher.index.codes.size() if flat else len(faiss.serialize_index(searcher.index))
        return size / 2**20
    return searcher.gallery.numel() * searcher.gallery.element_size() / 2**20


def timings(searcher, queries: torch.Tensor, k: int, singles: int) -> tuple[dict, list]:
    """Milliseconds per query at batch 1 (median of ``singles``) and at the whole query batch; the top-k columns."""
    one = []
    for i in range(singles):
        t = time.perf_counter()
        searcher.search(queries[i : i + 1], k)
        one.append(time.perf_counter() - t)
    t = time.perf_counter()
    _, cols = searcher.search(queries, k)
    batch = time.perf_counter() - t
    row = {"ms_per_query_batch1": 1000 * statistics.median(one), "ms_per_query_batched": 1000 * batch / len(queries)}
    return row, cols.tolist()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--ids", type=int, help="identities (centres); default n/20, 20 images each on average")
    parser.add_argument("--noise", type=float, default=1.0, help="noise norm relative to the unit centres")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--singles", type=int, default=50, help="queries timed one at a time")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--backends", default="torch,faiss,faiss-approx")
    parser.add_argument(
        "--nprobes", default="16,64,256,512,640,768,1024", help="an inverted-file index is timed at each"
    )
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--tiny", action="store_true", help="20,000 x 64 (the inverted file from 10,000): the path")
    args = parser.parse_args()
    if args.tiny:
        args.n, args.dim, args.ids, args.queries, args.singles = 20_000, 64, 1_000, 200, 10
        args.nprobes = "16,64"
    args.ids = args.ids or max(1, args.n // 20)
    from dhm.gallery import backends

    if args.tiny:
        backends.IVF_FROM = 10_000

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
        start = time.perf_counter()
        searcher = backends.SEARCHERS.get(name)(gallery)
        build = time.perf_counter() - start
        base = {"backend": name, "kind": getattr(searcher, "kind", "flat"), "build_s": build,
                "index_MB": index_mb(searcher)}  # fmt: skip
        probes = [int(p) for p in args.nprobes.split(",")] if getattr(searcher, "ivf", None) is not None else [None]
        for nprobe in probes:
            if nprobe is not None:
                searcher.nprobe = nprobe
            row, cols = timings(searcher, queries, args.k, args.singles)
            row = {**base, **({"nprobe": nprobe} if nprobe else {}), **row, "peak_rss_MB": peak_rss_mb()}
            if searcher.exact and exact is None:
                exact = cols
            if exact is not None:
                hits = sum(len(set(a) & set(b)) for a, b in zip(cols, exact))
                row["recall_at_k"] = hits / (args.k * len(queries))
            rows.append(row)
            print(json.dumps(row), flush=True)
        del searcher
        gc.collect()
    result = {"cpu": cpu(), "torch": torch.__version__, "args": vars(args), "rows": rows}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
