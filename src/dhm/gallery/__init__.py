"""Re-ID deployment: a gallery embedded once into an index file and searched without embedding it again."""

from .build import build_index, embed_files, fingerprint
from .embedding import embed
from .index import GalleryIndex, Match, Settings
from .search import open_gallery, search

__all__ = [
    "GalleryIndex",
    "Match",
    "Settings",
    "build_index",
    "embed",
    "embed_files",
    "fingerprint",
    "open_gallery",
    "search",
]
