"""How a gallery index is searched (``SEARCHERS``): each backend takes the gallery's L2-normalised embeddings once
and answers (distances, columns) of the ``k`` nearest gallery rows per query, nearest first, distances ``1 - cos``.

* ``torch``: exact, a matrix product in plain torch blocked over queries and gallery (always available).
* ``faiss``: exact, FAISS's flat inner-product index (``pip install faiss-cpu``; the ``faiss`` extra).
* ``faiss-approx``: approximate, for galleries of millions: HNSW (32 links, efSearch 128) below
  :data:`IVF_FROM` images, above it an inverted file of ``4 sqrt(N)`` lists with 4-bit fast-scan product codes and
  an 8-bit re-ranking, searching :data:`NPROBE_SHARE` of the lists (BENCHMARKS.md measures its recall against
  exact search). Built once; ``save``/``load`` keep it beside the index file.

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

#: galleries of at least this many images get the inverted-file index (smaller ones HNSW)
IVF_FROM = 200_000
#: the share of its lists an inverted-file index searches per query: 640 of the 4,000 lists of a million images,
#: recall@10 0.956 at 4.3 ms per query on 2 CPU cores (BENCHMARKS.md, "Gallery search": recall and time against it)
NPROBE_SHARE = 0.16


def has_faiss() -> bool:
    """Whether FAISS can be imported here."""
    return importlib.util.find_spec("faiss") is not None


def _add(index, gallery: torch.Tensor, chunk: int = 65536) -> None:
    """Add ``gallery`` to a FAISS index in float32 chunks (never a float32 copy of the whole gallery)."""
    for start in range(0, len(gallery), chunk):
        index.add(gallery[start : start + chunk].float().contiguous().numpy())


def _flat(faiss, gallery: torch.Tensor):
    """FAISS's exact inner-product index over ``gallery``, its storage allocated once and filled in float32 chunks.

    ``add`` grows the storage by doubling, which at a million 2048-d rows holds the old 4 GB and the new 8 GB at once;
    the result is the index ``add`` builds (the same serialised bytes).
    """
    import numpy as np

    n, dim = gallery.shape
    index = faiss.IndexFlatIP(dim)
    index.codes.resize(n * dim * 4)
    rows = faiss.rev_swig_ptr(index.codes.data(), n * dim * 4).view(np.float32).reshape(n, dim)
    for start in range(0, n, 65536):
        rows[start : start + 65536] = gallery[start : start + 65536].float().numpy()
    index.ntotal = n
    return index


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
    """Exact: ``1 - q @ g.T`` over blocks of up to 1,024 queries and chunks of the gallery, keeping a running top-k.

    Blocking the gallery as well as the queries keeps the products matrix-matrix (a batch of queries reads the
    gallery once per block, not once per few queries) and the working tensors near ``budget`` elements.
    """

    def __init__(self, gallery: torch.Tensor, budget: int = 1 << 23) -> None:
        super().__init__(gallery)
        self.gallery = gallery.float()  # float32: the products of a float16 gallery are slow on CPUs
        self.budget = budget

    def search(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        k = min(k, self.size)
        values, columns = [], []
        for start in range(0, len(queries), 1024):
            block = queries[start : start + 1024].float()
            chunk = max(k, self.budget // len(block))
            best_d = best_c = None
            for first in range(0, self.size, chunk):
                dist = 1.0 - block @ self.gallery[first : first + chunk].T
                top = dist.topk(min(k, dist.shape[1]), dim=1, largest=False)
                d, c = top.values, top.indices + first
                if best_d is not None:  # merge with the earlier chunks' k best (earlier columns first on ties)
                    d, c = torch.cat([best_d, d], dim=1), torch.cat([best_c, c], dim=1)
                    keep = d.topk(k, dim=1, largest=False).indices
                    d, c = d.gather(1, keep), c.gather(1, keep)
                best_d, best_c = d, c
            values.append(best_d)
            columns.append(best_c)
        return torch.cat(values), torch.cat(columns)


@SEARCHERS.register("faiss")
class FaissExactSearcher(Searcher):
    """Exact: FAISS's flat inner-product index (the same ranking as ``torch``, faster on large galleries)."""

    def __init__(self, gallery: torch.Tensor) -> None:
        super().__init__(gallery)
        self.index = _flat(_faiss(), gallery)

    def search(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        sims, columns = self.index.search(queries.float().contiguous().numpy(), k)
        return 1.0 - torch.from_numpy(sims), torch.from_numpy(columns).long()


@SEARCHERS.register("faiss-approx")
class FaissApproxSearcher(Searcher):
    """Approximate: HNSW for galleries below :data:`IVF_FROM` images, an inverted file above (module doc).

    The inverted file: ``4 sqrt(N)`` lists (k-means on 64 images per list), each image a 4-bit product code of
    ``min(D/2, 256)`` sub-vectors scanned with FAISS's fast-scan kernels (8-bit scalar codes where they do not
    divide ``D``), the ``8 k`` best candidates re-ranked on 8-bit scalar-quantised vectors; ``nprobe`` lists searched
    (:data:`NPROBE_SHARE` of them; BENCHMARKS.md measures recall and time against it).
    """

    exact = False

    def __init__(self, gallery: torch.Tensor, index=None) -> None:
        super().__init__(gallery)
        faiss = _faiss()
        if index is None:
            index = self.build(gallery, faiss)
        self.index = index
        self.ivf = faiss.try_extract_index_ivf(index)
        self.kind = "ivf" if self.ivf is not None else "hnsw"

    @staticmethod
    def build(gallery: torch.Tensor, faiss):
        n, dim = gallery.shape
        ip = faiss.METRIC_INNER_PRODUCT
        if n < IVF_FROM:
            index = faiss.IndexHNSWFlat(dim, 32, ip)
            index.hnsw.efConstruction = 80
            index.hnsw.efSearch = 128
            _add(index, gallery)
            return index
        lists = int(4 * math.sqrt(n))
        quantizer = faiss.IndexFlatIP(dim)
        codes = min(dim // 2, 256)  # sub-vectors: at most 256 (the scan's cost), of at least 2 dimensions
        if dim % codes == 0:
            ivf = faiss.IndexIVFPQFastScan(quantizer, dim, lists, codes, 4, ip)
        else:
            ivf = faiss.IndexIVFScalarQuantizer(quantizer, dim, lists, faiss.ScalarQuantizer.QT_8bit, ip)
        index = faiss.IndexRefine(ivf, faiss.IndexScalarQuantizer(dim, faiss.ScalarQuantizer.QT_8bit, ip))
        index.k_factor = 8
        sample = torch.randperm(n, generator=torch.Generator().manual_seed(0))[: 64 * lists].sort().values
        index.train(gallery[sample].float().contiguous().numpy())
        _add(index, gallery)
        ivf.nprobe = max(1, round(NPROBE_SHARE * lists))
        return index

    @property
    def nprobe(self) -> int | None:
        """Lists an inverted-file index searches (None for HNSW); set it to trade time for recall."""
        return None if self.ivf is None else self.ivf.nprobe

    @nprobe.setter
    def nprobe(self, value: int) -> None:
        if self.ivf is None:
            raise DHMError("nprobe applies to the inverted-file index (galleries of 200,000 images and more)")
        self.ivf.nprobe = value

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
