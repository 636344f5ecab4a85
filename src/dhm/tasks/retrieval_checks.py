"""Re-ID data that cannot train or be evaluated, refused when the dataset is built (before the first step) with one
:class:`~dhm.errors.DataError` line, rather than as a traceback after the last epoch: an empty split, a query or
gallery side with no image, no query with a match from another camera (nothing to rank under the Market-1501
convention), no training identity with two images (the triplet loss has no positive pair), fewer than two training
identities, and query identities that are also training identities (the protocol keeps them apart)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from typing import Any

import torch

from ..errors import DataError

QUERY, GALLERY = 0, 1


def _identities(source: Any) -> torch.Tensor:
    meta = getattr(source, "meta", None) or {}
    return meta.get("identity", source.labels)


def _matchable(q_ids, q_cams, g_ids, g_cams) -> int:
    """How many queries have a gallery image of their identity from another camera."""
    cameras: dict[int, set[int]] = defaultdict(set)
    for pid, cam in zip(g_ids.tolist(), g_cams.tolist()):
        cameras[pid].add(cam)
    return sum(bool(cameras.get(pid, set()) - {cam}) for pid, cam in zip(q_ids.tolist(), q_cams.tolist()))


def check_retrieval_splits(train: Any, evals: Mapping[str, Any], separate_ids: bool = False) -> None:
    """DataError when ``train`` (the training split) or an evaluation split (``evals``: name -> source, or None
    for a split the run does not have) cannot be trained or evaluated (module docstring). ``separate_ids``: the
    dataset numbers its test identities apart from training ones (MSMT17), so only ``val`` is checked for shared
    identities."""
    if len(train) == 0:
        raise DataError("the training split holds no image")
    counts = torch.bincount(train.labels.long())
    if int((counts > 0).sum()) < 2:
        raise DataError("the training split holds fewer than 2 identities: an identity loss needs others")
    if int((counts >= 2).sum()) == 0:
        raise DataError(
            "no training identity has two images: the batch-hard triplet loss has no positive pair "
            "(identity batches take K images of an identity)"
        )
    train_ids = set(_identities(train).tolist())
    for name, source in evals.items():
        if source is None:
            continue
        if len(source) == 0:
            raise DataError(f"the {name} split holds no image")
        ids, meta = _identities(source), source.meta
        cams = meta.get("camera", torch.zeros_like(ids))
        role = meta.get("role")
        if role is None:  # all against all
            query, gallery = torch.ones_like(ids, dtype=torch.bool), torch.ones_like(ids, dtype=torch.bool)
        else:
            query, gallery = role == QUERY, role == GALLERY
            for side, mask in (("query", query), ("gallery", gallery)):
                if not bool(mask.any()):
                    raise DataError(f"the {name} split has no {side} image")
        if _matchable(ids[query], cams[query], ids[gallery], cams[gallery]) == 0:
            raise DataError(
                f"no {name} query has an image of its identity from another camera in the gallery: nothing to rank "
                "(same-camera matches are removed, as the Market-1501 protocol)"
            )
        apart = separate_ids and name != "val"
        shared = [] if apart else sorted(set(ids[query].tolist()) & train_ids - {-1})
        if shared:
            raise DataError(
                f"{len(shared)} {name} identities are also training identities (e.g. {shared[0]}): the protocol "
                "evaluates on identities the model never trained on"
                + (" (carve validation by identity: data.val_by=identity)" if name == "val" else "")
            )
