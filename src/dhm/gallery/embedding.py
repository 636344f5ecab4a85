"""Embeddings of images from a trained re-ID model: the model's eval-mode output (the post-BN embedding of a model
with a BNNeck), L2-normalised, optionally averaged with that of the mirrored image; distances between them are cosine
distances (``1 - cos``), as the retrieval task ranks."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..branches import has_neck
from ..deployed import Deployed
from ..errors import DHMError


@torch.no_grad()
def embed(deployed: Deployed, images: torch.Tensor, batch: int = 256, flip: bool = False) -> torch.Tensor:
    """L2-normalised embeddings (N, D) of a uint8 (N, C, H, W) batch; with ``flip`` the mean of the image's and its
    mirror's embedding (then normalised).

    Example:
        >>> images = decode(list_images(["photos/"]), deployed.input_size)
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
