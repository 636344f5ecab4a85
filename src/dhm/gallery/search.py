"""``dhm search`` as a function: query images ranked against a gallery index file (embedded once by ``dhm embed``)
or against image folders embedded on the spot (streamed, as ``dhm embed`` does)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..deployed import Deployed
from ..errors import DHMError
from .backends import FaissApproxSearcher, Searcher
from .build import build_index, embed_files, settings_of
from .images import list_images
from .index import GalleryIndex, Match


def sidecar(index_path: str | Path) -> Path:
    """Where the approximate (FAISS) index of a gallery index file is kept: beside it, suffix ``.faiss``."""
    return Path(index_path).with_suffix(".faiss")


def write_approximate(index: GalleryIndex, index_path: str | Path) -> Path:
    """Build the approximate index of ``index`` and write it beside ``index_path``; returns its path."""
    path = sidecar(index_path)
    FaissApproxSearcher(index.embeddings).save(path)
    return path


def open_searcher(index: GalleryIndex, index_path: str | Path | None, approximate: bool) -> Searcher:
    """The exact searcher, or the approximate one: read from beside ``index_path`` when ``dhm embed
    --approximate`` wrote it (one of another size is refused as stale), else built now."""
    if not approximate:
        return index.searcher()
    path = sidecar(index_path) if index_path is not None else None
    if path is not None and path.is_file():
        searcher = FaissApproxSearcher.load(index.embeddings, path)
        if searcher.index.ntotal != len(index):
            raise DHMError(
                f"{path} holds {searcher.index.ntotal:,} images and the index {len(index):,}: write it again with "
                "dhm embed ... --approximate"
            )
        return searcher
    return index.searcher("faiss-approx")


def is_index(gallery: Sequence[str | Path]) -> bool:
    """Whether ``gallery`` names one index file (a ``.safetensors`` file) rather than images."""
    return len(gallery) == 1 and Path(gallery[0]).suffix == ".safetensors" and Path(gallery[0]).is_file()


def open_gallery(deployed: Deployed, gallery: Sequence[str | Path], flip: bool = False) -> GalleryIndex:
    """The gallery as an index: an index file, loaded and checked against ``deployed`` and ``flip`` (another
    model's or other settings' index is refused in one line), or images embedded now."""
    if is_index(gallery):
        index = GalleryIndex.load(gallery[0])
        index.check(settings_of(deployed, flip))
        return index
    return build_index(deployed, gallery, flip=flip, dtype="float32")


def search(
    deployed: Deployed,
    gallery: Sequence[str | Path],
    queries: Sequence[str | Path],
    top_k: int = 10,
    flip: bool = False,
    approximate: bool = False,
    nprobe: int | None = None,
) -> list[tuple[Path, list[Match]]]:
    """For every query image, the ``top_k`` nearest gallery images (an index file, or folders searched
    recursively), nearest first; a query file that is also in the gallery is not its own match. ``approximate``
    searches the FAISS index that ``dhm embed --approximate`` wrote beside the index file (built now if absent);
    ``nprobe`` sets how many lists its inverted file searches (galleries of 200,000 images and more).

    Example:
        >>> for query, matches in search(deployed, ["gallery.safetensors"], ["me.jpg"], top_k=5):
        ...     print(query, [(Path(m.path).name, round(m.distance, 3)) for m in matches])
    """
    index = open_gallery(deployed, gallery, flip)
    if nprobe is not None and not approximate:
        raise DHMError("--nprobe applies to approximate search: add --approximate")
    searcher = open_searcher(index, gallery[0] if is_index(gallery) else None, approximate)
    if nprobe is not None:
        if nprobe < 1:
            raise DHMError(f"--nprobe must be >= 1, got {nprobe}")
        searcher.nprobe = nprobe
    files = list_images(queries)
    feats = embed_files(deployed, files, flip=flip)
    return list(zip(files, index.search(feats, top_k, query_paths=files, searcher=searcher)))
