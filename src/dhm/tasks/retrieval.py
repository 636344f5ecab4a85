"""The task ``retrieval`` (instance recognition, person re-ID): training labels are identities; an evaluation split
is ranked by embedding distance, every head's embedding and their concatenation, under the Market-1501
convention (:mod:`dhm.retrieval`). A split whose samples carry ``meta["role"]`` is queries (0) against gallery
(1); one without (validation carved by identity) is evaluated all against all. mAP of the main head is primary.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..branches import DHMModel, has_neck, head_logits, unwrap
from ..errors import ConfigError, DataError
from ..options import SUPERVISION
from ..retrieval import evaluate, evaluate_features, rerank
from .base import TASKS, EvalContext, PlotPanel, Task, format_rows
from .retrieval_checks import check_retrieval_splits
from .retrieval_pictures import write_rank_images

RANKS = (1, 5, 10)


@dataclass
class RetrievalSupervision:
    """The retrieval task's supervision options (``loss.supervision.*``): BoT's identity cross-entropy (its label
    smoothing is the shared ``loss.label_smoothing``), batch-hard triplet and, with a weight, the center loss."""

    margin: float = 0.3  # triplet margin (0 = soft margin)
    triplet_weight: float = 1.0  # weight of the batch-hard triplet term
    center_weight: float = 0.0  # weight of the center loss (0 = off; BoT: 5e-4)
    center_lr: float = 0.5  # SGD learning rate of the centers' own update (BoT)

    def __post_init__(self) -> None:
        for key, ok, words in (
            ("margin", self.margin >= 0, ">= 0 (0 = soft margin)"),
            ("triplet_weight", self.triplet_weight >= 0, ">= 0"),
            ("center_weight", self.center_weight >= 0, ">= 0 (0 = off)"),
            ("center_lr", self.center_lr > 0, "> 0"),
        ):
            if not ok:
                raise ConfigError(f"loss.supervision.{key} must be {words}, got {getattr(self, key)!r}")


def _embeddings(inner: nn.Module, x: Tensor, heads: bool, flip: bool = False) -> list[Tensor]:
    """L2-normalised embeddings of every head (see :func:`_raw_embeddings`); with ``flip`` the mean of the image's
    and its mirror's, as re-ID tests with flipped features."""
    embs = _raw_embeddings(inner, x, heads)
    if flip:
        embs = [a.float() + b.float() for a, b in zip(embs, _raw_embeddings(inner, x.flip(3), heads))]
    return [F.normalize(e.float(), dim=1) for e in embs]


def _raw_embeddings(inner: nn.Module, x: Tensor, heads: bool) -> list[Tensor]:
    """The embedding of every head (the main one alone without ``heads``), the model in eval mode: with a BNNeck
    each head's eval-mode output (the post-BN embedding, as BoT tests); without, a branched model's pooled
    features; a plain model's own output."""
    if isinstance(inner, DHMModel):
        if not heads:
            return [inner(x)] if has_neck(inner.backbone) else [inner.forward_heads(x, features=True).features[0]]
        out = inner.forward_heads(x, features=True)
        return list(out.logits) if has_neck(inner.backbone) else list(out.features)
    return [inner(x)]


class Retrieval(Task):
    """Instance recognition: rank-k, mAP and mINP (%) per head and for the concatenated embeddings. Evaluation
    options (``EvalContext.options``, ``dhm eval --flip --rerank``): ``flip`` averages each embedding with its
    mirrored image's, ``rerank`` ranks by k-reciprocal re-ranked distances (k1 20, k2 6, lambda 0.3), ``rank_images``
    (a folder) draws the deployed head's ranking of the worst and of a sample of queries there."""

    name = "retrieval"
    primary = "mAP/main"
    # best.pt is the last epoch: on the PKU subset the best validation epoch (6 held-out identities) was worse than
    # the last in 8 of 10 runs, -0.90 mAP on average (RESULTS.md, "Which re-ID checkpoint"; train.select=mAP/main
    # chooses by validation instead)
    default_select = "last"
    minimize = frozenset()
    select_split = "val"
    report_splits = ("test",)
    train_metric = "id_acc"
    carve = "identity"
    sampler = "identity"
    eval_options = ("flip", "rerank", "rank_images")
    labels = {"mAP/main": ("mAP", " (%)")}
    panels = (
        PlotPanel(
            "retrieval.png",
            "validation retrieval per head: mAP (solid), rank-1 (dashed)",
            "%",
            ("val/mAP/", "val/rank1/"),
            ("val mAP", "val rank-1"),
            "mAP/main",
        ),
    )

    def supervision(self, loss: Any, heads: str) -> list[tuple[str, dict[str, Any]]]:
        """BoT's supervision of ``heads``: identity cross-entropy + batch-hard triplet (+ center loss)."""
        s = loss.supervision
        terms = [
            *super().supervision(loss, heads),
            ("triplet", {"heads": heads, "margin": s.margin, "weight": s.triplet_weight}),
        ]
        if s.center_weight > 0:
            terms.append(("center", {"heads": heads, "weight": s.center_weight, "lr": s.center_lr}))
        return terms

    def check_splits(self, train: Any, evals: dict[str, Any], separate_ids: bool = False) -> None:
        check_retrieval_splits(train, evals, separate_ids)

    def check_labels(self, split: str, labels: Tensor, num_classes: int) -> None:
        """Training labels are identity indices 0..N-1; evaluation splits hold any identity ids."""
        if split == "train" and len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
            raise DataError(f"training identity labels must be 0..{num_classes - 1} (model.num_classes)")

    def step_counters(self, outputs: Any, target: Tensor) -> Tensor:
        """Identity predictions that are right, per head."""
        return torch.stack([(z.argmax(-1) == target).sum() for z in head_logits(outputs)])

    def train_metrics(self, counts: Sequence[float], seen: float, heads: Sequence[str]) -> dict[str, float]:
        return {"id_acc": 100.0 * counts[0] / seen}

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: Iterable, ctx: EvalContext) -> dict[str, float]:
        """Embeddings of the whole split (gathered over processes by the samples' indices), L2-normalised, then
        the retrieval metrics of every head and of their concatenation."""
        inner = unwrap(model)
        was_training = inner.training
        inner.eval()
        parts: list[tuple[Tensor, list[Tensor], Tensor, Tensor, Tensor | None]] = []
        for i, batch in enumerate(loader):
            if ctx.log is not None and i:
                ctx.log(i)
            meta = batch.meta
            with ctx.autocast():
                embs = _embeddings(inner, batch[0], ctx.heads, bool(ctx.options.get("flip")))
            parts.append((meta["index"], embs, batch[1], meta["camera"], meta.get("role")))
        inner.train(was_training)
        if not parts:
            raise DataError("the retrieval split is empty")
        order = torch.argsort(ctx.gather(torch.cat([p[0] for p in parts])))  # the split's order, whatever the shards

        def whole(column: int, k: int | None = None) -> Tensor:
            rows = torch.cat([p[column][k] if k is not None else p[column] for p in parts])
            return ctx.gather(rows)[order]

        heads = [whole(1, k) for k in range(len(parts[0][1]))]
        pids, cams = whole(2).long(), whole(3).long()
        roles = whole(4).long() if parts[0][4] is not None else None
        names = list(inner.head_names) if ctx.heads and isinstance(inner, DHMModel) else ["main"]
        if len(heads) > 1:
            heads.append(F.normalize(torch.cat(heads, 1), dim=1))
            names.append("concat")
        result: dict[str, float] = {}
        q = roles == 0 if roles is not None else torch.ones_like(pids, dtype=torch.bool)
        g = roles == 1 if roles is not None else q
        if ctx.options.get("rank_images"):  # pictures of the deployed head's ranking (dhm eval --rank-images)
            source = getattr(loader, "source", None)
            write_rank_images(heads[0], pids, cams, q, g, source, ctx.options["rank_images"])
        for name, feats in zip(names, heads):
            if ctx.options.get("rerank"):
                dist = rerank(feats[q], feats[g] if roles is not None else None)
                r = evaluate(dist, pids[q], pids[g], cams[q], cams[g])
            else:
                r = evaluate_features(feats[q], feats[g], pids[q], pids[g], cams[q], cams[g], metric="cosine")
            result[f"mAP/{name}"] = 100.0 * r["mAP"]
            for k in RANKS:
                result[f"rank{k}/{name}"] = 100.0 * r["cmc"][min(k, len(r["cmc"])) - 1]
            result[f"mINP/{name}"] = 100.0 * r["mINP"]
        return result

    def describe(self, result: dict[str, float]) -> str:
        """The retrieval table of one evaluated split (``dhm eval``): a row per head and the concatenation, mAP,
        rank-1/5/10 and mINP (%)."""
        heads = sorted({k.split("/")[1] for k in result if k.startswith("mAP/")}, key=lambda h: (h != "main", h))
        rows = [("head", "mAP", *(f"rank-{k}" for k in RANKS), "mINP")]
        for h in heads:
            cells = (result[f"mAP/{h}"], *(result[f"rank{k}/{h}"] for k in RANKS), result[f"mINP/{h}"])
            rows.append((h, *(f"{c:.2f}" for c in cells)))
        return "\n" + format_rows(rows)

    def head_metric(self, head: str) -> str:
        return f"mAP/{head}"

    def reported(self, heads: Sequence[str]) -> set[str]:
        names = ("mAP", "mINP", *(f"rank{k}" for k in RANKS))
        return {f"{name}/{head}" for name in names for head in [*heads, "concat"]}

    def epoch_fields(self, record: dict[str, Any]) -> str:
        heads = " ".join(f"{k.split('/')[-1]} {v:.2f}" for k, v in record.items() if k.startswith("val/mAP/"))
        return f"train id acc {record.get('train/id_acc', float('nan')):.2f}  val mAP [{heads}]"

    def summary_entries(self, best: dict[str, float], last: dict[str, float], val: dict[str, float]) -> dict:
        """``test_mAP`` and ``test_rank1`` of the checkpoint chosen on validation, ``test_mAP_last``,
        ``best_val_mAP``."""
        return {
            "test_mAP": best.get("mAP/main"),
            "test_rank1": best.get("rank1/main"),
            "test_mAP_last": last.get("mAP/main"),
            "best_val_mAP": val.get("mAP/main"),
        }

    def summary_table(
        self, heads: Sequence[str], val: dict[str, float], best: dict[str, float], last: dict[str, float]
    ) -> str:
        """mAP and rank-1 (%) per head and the concatenation: validation and test of the best checkpoint, test of
        the last epoch."""
        rows = [("head", "val mAP (best.pt)", "test mAP (best.pt)", "test rank-1 (best.pt)", "test mAP (last)")]
        for head in [*heads, "concat"]:
            if f"mAP/{head}" in best or f"mAP/{head}" in val:
                cells = (val.get(f"mAP/{head}"), best.get(f"mAP/{head}"), best.get(f"rank1/{head}"))
                cells += (last.get(f"mAP/{head}"),)
                rows.append((head, *(f"{c:.2f}" if c is not None else "-" for c in cells)))
        return format_rows(rows)


TASKS.register("retrieval")(Retrieval())
SUPERVISION["retrieval"] = RetrievalSupervision
