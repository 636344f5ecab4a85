"""``dhm embed`` and ``dhm search``: embeddings of image files from a trained re-ID model, and a gallery ranked
for each query image, from any file a run or an export writes (read by :func:`dhm.deployed.load_deployed`, which
gives the normalisation and input size). The embedding is the model's eval-mode output (the post-BN embedding of
a model with a BNNeck), L2-normalised, optionally averaged with that of the mirrored image; distances are cosine
distances (``1 - cos``), as the retrieval task ranks."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from .branches import has_neck
from .deployed import Deployed
from .errors import DHMError
from .files import refuse_input_as_output
from .predict import load_images
from .retrieval import distance


@torch.no_grad()
def embed(deployed: Deployed, images: torch.Tensor, batch: int = 256, flip: bool = False) -> torch.Tensor:
    """L2-normalised embeddings (N, D) of a uint8 (N, C, H, W) batch; with ``flip`` the mean of the image's and its
    mirror's embedding (then normalised).

    Example:
        >>> files, images = load_images(["photos/"], deployed.input_size)
        >>> feats = embed(deployed, images, flip=True)
    """
    if not has_neck(deployed.model):
        raise DHMError(
            "this model has no re-ID neck: its outputs are class scores, not embeddings (train with a re-ID "
            "recipe, or model.neck=bnneck and train.task=retrieval)"
        )
    mean = torch.tensor(deployed.mean).view(1, -1, 1, 1)
    std = torch.tensor(deployed.std).view(1, -1, 1, 1)
    out = []
    for start in range(0, len(images), batch):
        x = (images[start : start + batch].float() / 255 - mean) / std
        feats = deployed.model(x).float()
        if flip:
            feats = feats + deployed.model(x.flip(3)).float()
        out.append(F.normalize(feats, dim=1))
    return torch.cat(out)


def save_embeddings(path: str | Path, files: list[Path], feats: torch.Tensor) -> Path:
    """Write ``feats`` and the image paths: ``.safetensors`` (tensor ``embeddings``, metadata ``files`` as JSON) or
    ``.pt`` (a dict ``{"embeddings", "files"}``)."""
    path = Path(path).expanduser()
    refuse_input_as_output(path, files, "dhm embed")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix == ".safetensors":
            try:
                from safetensors.torch import save_file
            except ImportError:
                raise DHMError("writing safetensors needs the safetensors package: pip install safetensors") from None
            save_file(
                {"embeddings": feats.contiguous()}, str(path), metadata={"files": json.dumps(list(map(str, files)))}
            )
        elif path.suffix == ".pt":
            torch.save({"embeddings": feats, "files": [str(f) for f in files]}, path)
        else:
            raise DHMError(f"embeddings are written as .safetensors or .pt, got {path.name}")
    except OSError as exc:
        raise DHMError(f"cannot write {path}: {exc.strerror or exc}") from None
    return path


@dataclass(frozen=True)
class Match:
    """One gallery image ranked for a query: its path and cosine distance."""

    path: Path
    distance: float


def search(
    deployed: Deployed, gallery: list[str | Path], queries: list[str | Path], top_k: int = 10, flip: bool = False
) -> list[tuple[Path, list[Match]]]:
    """For every query image, the ``top_k`` nearest gallery images (folders searched recursively), nearest first;
    a query file that is also in the gallery is not its own match.

    Example:
        >>> for query, matches in search(deployed, ["gallery/"], ["me.jpg"], top_k=5):
        ...     print(query, [(m.path.name, round(m.distance, 3)) for m in matches])
    """
    g_files, g_images = load_images(list(gallery), deployed.input_size)
    q_files, q_images = load_images(list(queries), deployed.input_size)
    g_feats, q_feats = embed(deployed, g_images, flip=flip), embed(deployed, q_images, flip=flip)
    dist = distance(q_feats, g_feats, "cosine")
    g_resolved = [p.resolve() for p in g_files]
    for row, path in enumerate(q_files):  # a query never matches itself
        for col in [c for c, g in enumerate(g_resolved) if g == path.resolve()]:
            dist[row, col] = float("inf")
    k = max(1, min(top_k, len(g_files)))
    values, index = dist.topk(k, dim=1, largest=False)
    results = []
    for path, vals, idx in zip(q_files, values.tolist(), index.tolist()):
        results.append((path, [Match(g_files[i], v) for v, i in zip(vals, idx) if v != float("inf")]))
    return results
