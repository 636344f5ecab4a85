"""Embedding a large gallery from files on disk (BENCHMARKS.md, "Gallery search"): peak memory that does not grow
with the number of images, and images/s.

Writes synthetic JPEG crops (128x64, random colour blocks, in folders of 1,000) once, trains a tiny re-ID model on
the PKU-Reid subset for one step to get a ``deploy.pt`` (or takes ``--deploy``), then runs ``dhm embed`` on the
first N images for each N of ``--sizes`` in a fresh process and reports its wall time, images/s and peak RSS (GNU
time's maximum resident set size of that process). Run it alone on the machine; ``--tiny`` checks the path in
seconds.

    python benchmarks/embed_stream.py --sizes 10000,100000 --json benchmarks/results/cpu_embed_stream.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

PKU = (
    Path(os.environ.get("DHM_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")) / "pku-reid-subset"
)


def cpu() -> str:
    """The CPU's model name, the threads dhm embed gets, and whether it computes bf16 natively."""
    import torch

    from dhm.precision import native_bf16

    with open("/proc/cpuinfo") as f:
        name = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "unknown CPU")
    bf16 = "native bf16" if native_bf16(torch.device("cpu")) else "no native bf16 (AVX2 only)"
    return f"{name}, {os.cpu_count()} cores, {bf16}"


def write_images(root: Path, n: int) -> None:
    """``n`` synthetic 128x64 JPEGs under ``root`` (kept between runs: only the missing ones are written)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(n):
        path = root / f"{i // 1000:04d}" / f"{i % 1000:04d}_c{i % 6 + 1}s1_{i:06d}_00.jpg"
        if path.is_file():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        blocks = rng.integers(0, 256, (8, 4, 3), dtype=np.uint8)
        Image.fromarray(np.kron(blocks, np.ones((16, 16, 1), dtype=np.uint8))).save(path, quality=90)


def deploy_file(work: Path) -> Path:
    out = work / "model"
    if not (out / "deploy.pt").is_file():
        cmd = [sys.executable, "-m", "dhm", "train", "pku-reid", f"data.root={PKU}", "train.epochs=1"]
        cmd += ["train.limit_batches=1", "train.progress=false", f"train.out_dir={out}", "train.overwrite=true"]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return out / "deploy.pt"


def embed(deploy: Path, folders: list[Path], out: Path) -> dict:
    """One ``dhm embed`` in a fresh process under ``/usr/bin/time``: wall time and that process's peak RSS."""
    start = time.perf_counter()
    cmd = ["/usr/bin/time", "-f", "maxrss_kb=%M", sys.executable, "-m", "dhm", "embed", str(deploy)]
    cmd += [*map(str, folders), "-o", str(out)]
    done = subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - start
    peak = int(done.stderr.rsplit("maxrss_kb=", 1)[1].split()[0])
    return {"wall_s": wall, "peak_rss_MB": peak / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/dhm-embed-stream"))
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--deploy", type=Path, help="a re-ID deploy.pt (default: one trained here for one step)")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--tiny", action="store_true", help="sizes 1,000 and 3,000")
    args = parser.parse_args()
    sizes = [1000, 3000] if args.tiny else [int(s) for s in args.sizes.split(",")]
    images = args.work / "gallery"
    start = time.perf_counter()
    write_images(images, max(sizes))
    print(f"{max(sizes):,} images under {images} ({time.perf_counter() - start:.0f} s); {cpu()}", flush=True)
    deploy = args.deploy or deploy_file(args.work)
    rows = []
    for n in sizes:
        folders = sorted(images.iterdir())[: (n + 999) // 1000]
        row = {"images": n, **embed(deploy, folders, args.work / f"index_{n}.safetensors")}
        row["images_per_s"] = n / row["wall_s"]
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            where = (
                "WORK/model/deploy.pt (trained here for one step; WORK is --work)"
                if args.deploy is None
                else str(args.deploy)
            )
            json.dump({"cpu": cpu(), "deploy": where, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
