"""The gallery benchmarks of BENCHMARKS.md ("Gallery search") in their tiny modes: the million-embedding search and
the streaming embed run end to end and write the rows the section reports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import SHARED_DATA

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def _run(script: str, *args: str, env: dict | None = None) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), "--tiny", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, **(env or {})},
    )
    assert done.returncode == 0, done.stderr[-2000:]


def test_gallery_search_benchmark_times_every_backend_and_the_recall_of_each_nprobe(tmp_path):
    pytest.importorskip("faiss", reason="the faiss extra (faiss-cpu) is not installed")
    _run("gallery_search.py", "--json", str(tmp_path / "search.json"))
    result = json.loads((tmp_path / "search.json").read_text())
    rows = {(r["backend"], r.get("nprobe")): r for r in result["rows"]}
    assert set(rows) == {("torch", None), ("faiss", None), ("faiss-approx", 16), ("faiss-approx", 64)}
    assert rows["torch", None]["recall_at_k"] == 1.0 and rows["faiss", None]["recall_at_k"] == 1.0
    assert rows["faiss-approx", 16]["kind"] == "ivf"
    assert rows["faiss-approx", 16]["recall_at_k"] <= rows["faiss-approx", 64]["recall_at_k"]
    assert rows["faiss-approx", 64]["recall_at_k"] > 0.9
    assert "bf16" in result["cpu"] and all(r["ms_per_query_batch1"] > 0 for r in rows.values())


@pytest.mark.skipif(not (SHARED_DATA / "pku-reid-subset").is_dir(), reason="needs the PKU-Reid subset")
def test_embed_stream_benchmark_reports_peak_memory_and_speed_per_size(tmp_path):
    out = tmp_path / "embed.json"
    _run(
        "embed_stream.py",
        "--work",
        str(tmp_path / "work"),
        "--json",
        str(out),
        env={"DHM_SHARED_DATA": str(SHARED_DATA)},
    )
    result = json.loads(out.read_text())
    assert [r["images"] for r in result["rows"]] == [1000, 3000] and "bf16" in result["cpu"]
    assert all(r["peak_rss_MB"] > 50 and r["images_per_s"] > 0 for r in result["rows"])
    index = tmp_path / "work" / "index_3000.safetensors"
    from dhm.gallery import GalleryIndex

    assert len(GalleryIndex.load(index)) == 3000
