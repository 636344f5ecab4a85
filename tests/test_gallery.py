"""The gallery index (dhm.gallery): written once, read back exactly, searched exactly as dhm.retrieval ranks, a
query never its own match, and an index of another model or other settings refused in one line."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from dhm.errors import DHMError
from dhm.gallery import GalleryIndex, Settings
from dhm.gallery.build import names_of
from dhm.retrieval import distance

pytest.importorskip("safetensors")
SETTINGS = Settings("ab" * 32, False, (3, 64, 24), (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


def _index(n: int = 50, dim: int = 16, seed: int = 0, dtype=torch.float32, prefix: str = "/g") -> GalleryIndex:
    feats = F.normalize(torch.randn(n, dim, generator=torch.Generator().manual_seed(seed)), dim=1).to(dtype)
    return GalleryIndex(feats, [f"{prefix}/{i:04d}_c{i % 3 + 1}s1_0001_00.jpg" for i in range(n)], SETTINGS)


def test_an_index_reads_back_exactly(tmp_path):
    index = _index(dtype=torch.float16)
    index.paths[3] = "/g/ünïcode name, with spaces.jpg"
    index.ids[:] = torch.arange(50)
    back = GalleryIndex.load(index.save(tmp_path / "gallery.safetensors"))
    assert back.paths == index.paths and back.settings == SETTINGS and back.embeddings.dtype == torch.float16
    assert torch.equal(back.embeddings, index.embeddings) and torch.equal(back.ids, index.ids)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gallery.safetensors"]  # written atomically, no leftovers


def test_exact_search_ranks_as_dhm_retrieval(tmp_path):
    index = _index(n=300)
    queries = F.normalize(torch.randn(40, 16, generator=torch.Generator().manual_seed(1)), dim=1)
    expected = distance(queries, index.embeddings, "cosine").topk(7, dim=1, largest=False)
    got = index.search(queries, top_k=7)
    assert [[m.path for m in row] for row in got] == [[index.paths[i] for i in r] for r in expected.indices.tolist()]
    torch.testing.assert_close(torch.tensor([[m.distance for m in row] for row in got]), expected.values.clamp_min(0))


def test_torch_search_in_gallery_chunks_ranks_as_one_product():
    """The torch backend's running top-k over gallery chunks (a budget small enough for chunks of 20 images and
    several query blocks' worth of merges) gives dhm.retrieval's ranking and distances."""
    from dhm.gallery.backends import TorchSearcher

    gallery = _clusters(333)
    queries = _clusters(1500, seed=5)  # two query blocks
    expected = distance(queries, gallery, "cosine").topk(9, dim=1, largest=False)
    dist, cols = TorchSearcher(gallery, budget=20 * 1024).search(queries, 9)
    assert torch.equal(cols, expected.indices)
    torch.testing.assert_close(dist, expected.values)
    dist, cols = TorchSearcher(gallery[:5], budget=1).search(queries[:3], 9)  # k above the gallery size
    assert cols.shape == (3, 5) and sorted(cols[0].tolist()) == [0, 1, 2, 3, 4]


def test_a_query_is_never_its_own_match(tmp_path):
    index = _index(n=20)
    queries = index.embeddings[[4, 9]]  # the gallery's own images, named by their paths
    rows = index.search(queries, top_k=3, query_paths=[index.paths[4], "/elsewhere/x.jpg"])
    assert index.paths[4] not in [m.path for m in rows[0]] and len(rows[0]) == 3
    assert rows[1][0].path == index.paths[9] and rows[1][0].distance == pytest.approx(0.0, abs=1e-6)


def test_another_models_or_settings_index_is_refused():
    index = _index()
    other = Settings("cd" * 32, True, (3, 64, 24), (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    with pytest.raises(DHMError, match=r"another model \(fingerprint cdcdcdcdcdcd against ababababab.*flip True"):
        index.check(other)
    with pytest.raises(DHMError, match="1 image\\(s\\) are in the index already"):
        index.extend(GalleryIndex(index.embeddings[:1], index.paths[:1], SETTINGS))
    grown = index.extend(_index(n=5, seed=3, prefix="/new"))
    assert len(grown) == 55 and grown.paths[-1].startswith("/new/")


def test_a_file_that_is_not_an_index_is_refused(tmp_path):
    from safetensors.torch import save_file

    save_file({"embeddings": torch.zeros(2, 4)}, str(tmp_path / "feats.safetensors"), metadata={"files": "[]"})
    with pytest.raises(DHMError, match="is not a gallery index"):
        GalleryIndex.load(tmp_path / "feats.safetensors")


def test_market_style_names_carry_identity_and_camera():
    ids, cams = names_of([Path("0002_c1s1_000451_03.jpg"), Path("-1_c3s2_000001_00.jpg"), Path("01_2.png")])
    assert ids.tolist() == [2, -1, -1] and cams.tolist() == [1, 3, -1]


def _clusters(n: int, dim: int = 32, ids: int = 40, seed: int = 0) -> torch.Tensor:
    """Identity-structured embeddings: every identity a random centre, every image its centre plus noise."""
    g = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(ids, dim, generator=g), dim=1)
    return F.normalize(
        centres[torch.randint(0, ids, (n,), generator=g)] + 0.3 * torch.randn(n, dim, generator=g), dim=1
    )


def test_faiss_exact_ranks_as_torch():
    pytest.importorskip("faiss", reason="the faiss extra (faiss-cpu) is not installed")
    index = GalleryIndex(_clusters(500), [f"/g/{i}.jpg" for i in range(500)], SETTINGS)
    queries = _clusters(30, seed=1)
    by_torch = index.search(queries, 8, searcher=index.searcher("torch"))
    by_faiss = index.search(queries, 8, searcher=index.searcher("faiss"))
    assert [[m.path for m in r] for r in by_torch] == [[m.path for m in r] for r in by_faiss]
    got = torch.tensor([[m.distance for m in r] for r in by_faiss])
    torch.testing.assert_close(got, torch.tensor([[m.distance for m in r] for r in by_torch]), atol=1e-5, rtol=0)
    import faiss

    from dhm.gallery.backends import _flat

    added = faiss.IndexFlatIP(32)
    added.add(index.embeddings.numpy())  # the storage filled in place is the index add() builds
    assert (faiss.serialize_index(_flat(faiss, index.embeddings)) == faiss.serialize_index(added)).all()
    own = index.search(index.embeddings[:3], 2, query_paths=index.paths[:3], searcher=index.searcher("faiss"))
    assert all(index.paths[i] not in [m.path for m in row] and len(row) == 2 for i, row in enumerate(own))


@pytest.mark.parametrize("ivf", [False, True])
def test_the_approximate_index_finds_what_exact_search_finds(monkeypatch, tmp_path, ivf):
    """HNSW (small galleries) and the IVF-SQ8 index (large ones; the threshold lowered here) against exact search:
    recall@10 on identity-structured embeddings, and the index written beside the gallery reads back."""
    pytest.importorskip("faiss", reason="the faiss extra (faiss-cpu) is not installed")
    from dhm.gallery import backends
    from dhm.gallery.search import open_searcher, write_approximate

    if ivf:
        monkeypatch.setattr(backends, "IVF_FROM", 1000)
    index = GalleryIndex(_clusters(4000), [f"/g/{i}.jpg" for i in range(4000)], SETTINGS)
    queries = _clusters(100, seed=2)
    exact = index.search(queries, 10, searcher=index.searcher("torch"))
    side = write_approximate(index, tmp_path / "gallery.safetensors")
    approx = open_searcher(index, tmp_path / "gallery.safetensors", approximate=True)
    assert side.is_file() and approx.kind == ("ivf" if ivf else "hnsw") and not approx.exact
    if ivf:  # 4,000 images make 252 short lists: probe a quarter of them
        approx.nprobe = 64
    else:
        with pytest.raises(DHMError, match="nprobe applies to the inverted-file index"):
            approx.nprobe = 64
    found = index.search(queries, 10, searcher=approx)
    recall = sum(len({m.path for m in a} & {m.path for m in e}) for a, e in zip(found, exact)) / (10 * len(queries))
    assert recall >= 0.9, recall
    small = GalleryIndex(index.embeddings[:10], index.paths[:10], SETTINGS)
    with pytest.raises(DHMError, match="holds 4,000 images and the index 10"):
        open_searcher(small, tmp_path / "gallery.safetensors", approximate=True)
