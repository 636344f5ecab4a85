"""A gallery index: the embeddings of a gallery's images, computed once by ``dhm embed`` and searched by
``dhm search`` without embedding the gallery again.

The file is safetensors: tensors ``embeddings`` (N, D; float16 or float32, L2-normalised), ``ids`` and ``cameras``
(int64, -1 where the image names do not carry them) and ``paths`` (the resolved image paths as UTF-8 bytes,
NUL-separated: a million paths would not fit safetensors' header); metadata ``dhm_index`` (JSON: format version,
the model's fingerprint and the embedding settings). An index is searched only with queries embedded by the same
model with the same settings: anything else is refused in one line."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import DHMError
from ..files import write_via_temp
from .backends import SEARCHERS, Searcher, exact_backend

FORMAT = "dhm-gallery-index/1"


@dataclass(frozen=True)
class Settings:
    """What an embedding depends on besides the images: the model (its fingerprint) and how it was applied."""

    fingerprint: str  # sha256 of the deployed model's weights and spec (dhm.gallery.build.fingerprint)
    flip: bool  # averaged with the mirrored image's embedding
    input_size: tuple[int, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def differences(self, other: Settings) -> list[str]:
        """The fields in which ``other`` differs, in words."""
        out = []
        if self.fingerprint != other.fingerprint:
            out.append(f"another model (fingerprint {other.fingerprint[:12]} against {self.fingerprint[:12]})")
        for name in ("flip", "input_size", "mean", "std"):
            mine, theirs = getattr(self, name), getattr(other, name)
            if mine != theirs:
                out.append(f"{name} {theirs} against {mine}")
        return out


@dataclass
class Match:
    """One gallery image ranked for a query: its path, cosine distance, and identity and camera (-1: unknown)."""

    path: str
    distance: float
    id: int = -1
    camera: int = -1


@dataclass
class GalleryIndex:
    """Embeddings of gallery images with their paths, identities and cameras, and the settings that made them.

    Example:
        >>> index = dhm.GalleryIndex.load("gallery.safetensors")
        >>> index.search(query_embeddings, top_k=5, query_paths=["me.jpg"])[0][0].path
    """

    embeddings: torch.Tensor  # (N, D), L2-normalised
    paths: list[str]
    settings: Settings
    ids: torch.Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.int64))
    cameras: torch.Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.int64))

    def __post_init__(self) -> None:
        n = len(self.paths)
        if self.ids.numel() == 0:
            self.ids = torch.full((n,), -1, dtype=torch.int64)
        if self.cameras.numel() == 0:
            self.cameras = torch.full((n,), -1, dtype=torch.int64)
        if not (self.embeddings.ndim == 2 and len(self.embeddings) == n == len(self.ids) == len(self.cameras)):
            raise DHMError(
                f"a gallery index needs one embedding, id and camera per path: {tuple(self.embeddings.shape)} "
                f"embeddings, {n} paths, {len(self.ids)} ids, {len(self.cameras)} cameras"
            )

    def __len__(self) -> int:
        return len(self.paths)

    # ----- files -----------------------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write the index (atomically) as safetensors; returns the path."""
        from safetensors.torch import save_file

        path = Path(path).expanduser()
        if path.suffix != ".safetensors":
            raise DHMError(f"a gallery index is written as .safetensors, got {path.name}")
        blob = torch.frombuffer(bytearray("\0".join(self.paths).encode()), dtype=torch.uint8) if self.paths else None
        tensors = {
            "embeddings": self.embeddings.contiguous(),
            "ids": self.ids.contiguous(),
            "cameras": self.cameras.contiguous(),
            "paths": blob if blob is not None else torch.empty(0, dtype=torch.uint8),
        }
        meta = {"format": FORMAT, **self.settings.__dict__}
        path.parent.mkdir(parents=True, exist_ok=True)
        write_via_temp(path, lambda tmp: save_file(tensors, str(tmp), metadata={"dhm_index": json.dumps(meta)}))
        return path

    @classmethod
    def load(cls, path: str | Path) -> GalleryIndex:
        """Read an index that ``dhm embed`` wrote; a file of another kind is refused in one line."""
        from safetensors import safe_open

        path = Path(path).expanduser()
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = (f.metadata() or {}).get("dhm_index")
                if meta is None:
                    raise DHMError(
                        f"{path} is not a gallery index (made by an older dhm embed, or another program): write one "
                        "with dhm embed CHECKPOINT IMAGES -o INDEX.safetensors"
                    )
                tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no iterator)
        except (OSError, ValueError) as exc:
            raise DHMError(f"cannot read the gallery index {path}: {exc}") from None
        info: dict[str, Any] = json.loads(meta)
        if info.pop("format", None) != FORMAT:
            raise DHMError(f"{path}: a gallery index of another format version; write it again with dhm embed")
        text = bytes(tensors["paths"].numpy()).decode() if tensors["paths"].numel() else ""
        settings = Settings(**{k: tuple(v) if isinstance(v, list) else v for k, v in info.items()})
        return cls(
            tensors["embeddings"], text.split("\0") if text else [], settings, tensors["ids"], tensors["cameras"]
        )

    def extend(self, other: GalleryIndex) -> GalleryIndex:
        """This index with ``other``'s images appended (the same model and settings; paths already here refused)."""
        self.check(other.settings, "the images to append")
        again = sorted(set(self.paths) & set(other.paths))
        if again:
            raise DHMError(f"{len(again)} image(s) are in the index already, e.g. {again[0]}")
        return GalleryIndex(
            torch.cat([self.embeddings, other.embeddings.to(self.embeddings.dtype)]),
            self.paths + other.paths,
            self.settings,
            torch.cat([self.ids, other.ids]),
            torch.cat([self.cameras, other.cameras]),
        )

    def check(self, settings: Settings, what: str = "the queries") -> None:
        """Refuse, in one line, ``settings`` other than the index's (another model, flip, size or normalisation)."""
        diff = self.settings.differences(settings)
        if diff:
            raise DHMError(f"{what} are embedded with {'; '.join(diff)} than this gallery index: embed both alike")

    # ----- search ----------------------------------------------------------------------------------------------
    def searcher(self, backend: str = "exact") -> Searcher:
        """A search backend over this index (:data:`dhm.gallery.backends.SEARCHERS`; ``exact``: FAISS's flat index
        where FAISS is installed, else torch). Build it once and pass it to :meth:`search` for many searches."""
        return SEARCHERS.get(exact_backend() if backend == "exact" else backend)(self.embeddings.float())

    def search(
        self,
        queries: torch.Tensor,
        top_k: int = 10,
        query_paths: Sequence[str | Path] | None = None,
        searcher: Searcher | None = None,
    ) -> list[list[Match]]:
        """The ``top_k`` nearest gallery images of each query embedding (cosine distance ``1 - cos``, as
        :func:`dhm.retrieval.distance` ranks), nearest first; exact unless ``searcher`` is an approximate backend.
        A query whose path (resolved) is in the gallery does not match that image (one more neighbour is asked
        for and its own image dropped, for all queries at once)."""
        searcher = searcher or self.searcher()
        k = max(1, min(top_k, len(self)))
        own = self._own_columns(query_paths, len(queries)) if query_paths is not None else None
        extra = 1 if own is not None and bool((own >= 0).any()) else 0
        dist, cols = searcher.search(queries, min(k + extra, len(self)))
        if extra:
            dist = dist.masked_fill(cols == own[:, None], float("inf"))
            dist, order = dist.sort(dim=1, stable=True)
            cols = cols.gather(1, order)
        dist, cols = dist[:, :k].tolist(), cols[:, :k].tolist()
        ids, cams = self.ids.tolist(), self.cameras.tolist()
        return [
            [Match(self.paths[i], max(0.0, v), ids[i], cams[i]) for v, i in zip(row_d, row_c) if v != float("inf")]
            for row_d, row_c in zip(dist, cols)
        ]

    def _own_columns(self, query_paths: Sequence[str | Path], queries: int) -> torch.Tensor:
        """For each query, the gallery column of the same file (-1: none)."""
        if len(query_paths) != queries:
            raise DHMError(f"{len(query_paths)} query paths for {queries} query embeddings")
        where = {p: i for i, p in enumerate(self.paths)}  # the index keeps resolved paths
        return torch.tensor([where.get(str(Path(p).resolve()), -1) for p in query_paths], dtype=torch.int64)
