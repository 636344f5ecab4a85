"""How a gallery index is searched (``SEARCHERS``): each backend takes the gallery's L2-normalised embeddings once
and answers (distances, columns) of the ``k`` nearest gallery rows per query, nearest first, distances ``1 - cos``.

* ``torch``: exact, a blocked matrix product in plain torch (always available).
* ``faiss``: exact, FAISS's flat inner-product index (``pip install faiss-cpu``; the ``faiss`` extra).
* ``faiss-approx``: approximate, for galleries of millions: HNSW (32 links, efSearch 128) below
  :data:`IVF_FROM` images, above it an inverted file of ``4 sqrt(N)`` lists with 8-bit scalar-quantised vectors,
  ``nprobe`` 32 (BENCHMARKS.md measures its recall against exact search). Built once; ``save``/``load`` keep it
  beside the index file.

``exact`` (the default of :meth:`~dhm.gallery.GalleryIndex.search`) is ``faiss`` where FAISS is installed, else
``torch``: the two give the same ranking (tests/test_gallery.py).
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import torch

from ..errors import DHMError
from ..registry import Registry
from ..retrieval.distance import query_blocks

#: galleries of at least this many images get the inverted-file index (smaller ones HNSW)
IVF_FROM = 200_000


def has_faiss() -> bool:
    """Whether FAISS can be imported here."""
    return importlib.util.find_spec("faiss") is not None


def _add(index, gallery: torch.Tensor, chunk: int = 65536) -> None:
    """Add ``gallery`` to a FAISS index in float32 chunks (never a float32 copy of the whole gallery)."""
    for start in range(0, len(gallery), chunk):
        index.add(gallery[start : start + chunk].float().contiguous().numpy())


def _faiss():
    try:
        import faiss
    except ImportError:
        raise DHMError("approximate search needs FAISS: pip install faiss-cpu (or the faiss extra)") from None
    return faiss


class Searcher:
    """A search backend over fixed gallery embeddings (N, D), L2-normalised."""

    exact = True

    def __init__(self, gallery: torch.Tensor) -> None:
        self.size = len(gallery)

    def search(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(distances, columns), each (Q, k), nearest first."""
        raise NotImplementedError


SEARCHERS: Registry[type[Searcher]] = Registry("gallery search backend")


@SEARCHERS.register("torch")
class TorchSearcher(Searcher):
    """Exact: ``1 - q @ g.T`` in query blocks of bounded memory, then top-k."""

    def __init__(self, gallery: torch.Tensor) -> None:
        super().__init__(gallery)
        self.gallery = gallery.float()  # float32: the products of a float16 gallery are slow on CPUs

    def search(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        values, columns = [], []
        for block in query_blocks(len(queries), self.size):
            dist = 1.0 - queries[block].float() @ self.gallery.T
            top = dist.topk(k, dim=1, largest=False)
            values.append(top.values)
            columns.append(top.indices)
        return torch.cat(values), torch.cat(columns)


@SEARCHERS.register("faiss")
class FaissExactSearcher(Searcher):
    """Exact: FAISS's flat inner-product index (the same ranking as ``torch``, faster on large galleries)."""

    def __init__(self, gallery: torch.Tensor) -> None:
        super().__init__(gallery)
        faiss = _faiss()
        self.index = faiss.IndexFlatIP(gallery.shape[1])
        _add(self.index, gallery)

    def search(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        sims, columns = self.index.search(queries.float().contiguous().numpy(), k)
        return 1.0 - torch.from_numpy(sims), torch.from_numpy(columns).long()


@SEARCHERS.register("faiss-approx")
class FaissApproxSearcher(Searcher):
    """Approximate: HNSW for galleries below :data:`IVF_FROM` images, an IVF-SQ8 index above (module doc)."""

    exact = False

    def __init__(self, gallery: torch.Tensor, index=None) -> None:
        super().__init__(gallery)
        faiss = _faiss()
        if index is None:
            index = self.build(gallery, faiss)
        self.index = index
        self.kind = "ivf" if hasattr(index, "nprobe") else "hnsw"

    @staticmethod
    def build(gallery: torch.Tensor, faiss):
        n, dim = gallery.shape
        if n < IVF_FROM:
            index = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = 80
            index.hnsw.efSearch = 128
            _add(index, gallery)
            return index
        lists = int(4 * math.sqrt(n))
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFScalarQuantizer(quantizer, dim, lists, faiss.ScalarQuantizer.QT_8bit,
                                              faiss.METRIC_INNER_PRODUCT)  # fmt: skip
        sample = torch.randperm(n, generator=torch.Generator().manual_seed(0))[: 64 * lists].sort().values
        index.train(gallery[sample].float().contiguous().numpy())
        _add(index, gallery)
        index.nprobe = 32
        return index

    def search(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        sims, columns = self.index.search(queries.float().contiguous().numpy(), k)
        columns = torch.from_numpy(columns).long()
        dist = 1.0 - torch.from_numpy(sims)
        dist[columns < 0] = float("inf")  # fewer than k found
        return dist, columns.clamp_min(0)

    def save(self, path: Path) -> None:
        _faiss().write_index(self.index, str(path))

    @classmethod
    def load(cls, gallery: torch.Tensor, path: Path) -> FaissApproxSearcher:
        return cls(gallery, _faiss().read_index(str(path)))


def exact_backend() -> str:
    """The exact backend used here: ``faiss`` where installed, else ``torch``."""
    return "faiss" if has_faiss() else "torch"
