"""The center loss of re-ID's strong baseline (Wen et al. 2016, as BoT trains it): one learned center per identity
and head; ``weight * mean_i ||f_i - c_{y_i}||^2`` on each head's pre-BN embedding, as
michuanhaohao/reid-strong-baseline@3da7e6f layers/center_loss.py:29-56 computes it (each squared distance clamped
to [1e-12, 1e12], and the (C - 1) masked-out entries of every row clamped up to 1e-12 too: a constant
(C - 1) x 1e-12 in the value, none in the gradient; kept so that the value is BoT's to the last digit).

The centers are the term's own parameters and have their own update, as in BoT: plain SGD (``lr`` 0.5) on the
*unweighted* loss, while the features get the weighted gradient. Both come from one expression, ``weight * L(f,
c.detach()) + L(f.detach(), c) - L(f, c).detach()`` (its value the weighted loss), so no gradient is rescaled by
hand. The engine trains a term's own parameters
with :meth:`Term.own_optimizer` (after the model's step, their gradients averaged over processes) and keeps them and
that optimizer's state in the checkpoint.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .embedding import _chosen
from .kl import fp32
from .terms import TERMS, Term


@TERMS.register("center")
class CenterLoss(Term):
    """Center loss on the embeddings of ``heads`` (``all``, ``main`` or names); ``dims`` are the heads' embedding
    sizes, ``num_classes`` the identities; logs ``center/<head>`` (unweighted)."""

    needs = ("features",)

    def __init__(
        self,
        num_classes: int,
        dims: Sequence[int],
        names: Sequence[str],
        heads: str | Sequence[str] = "all",
        weight: float = 5e-4,
        lr: float = 0.5,
    ) -> None:
        super().__init__()
        if weight < 0 or lr <= 0 or num_classes < 1:
            raise ValueError(
                f"center loss needs weight >= 0, lr > 0 and classes >= 1, got {weight}, {lr}, {num_classes}"
            )
        if len(dims) != len(names):
            raise ValueError(f"center loss: {len(dims)} embedding sizes for {len(names)} heads {list(names)}")
        self.heads = heads if isinstance(heads, str) else tuple(heads)
        self.chosen = _chosen(self.heads, list(names))
        self.weight, self.lr = weight, lr
        self.centers = nn.ParameterList(
            [nn.Parameter(torch.randn(num_classes, int(dims[k]))) for k in self.chosen]  # BoT: standard normal
        )

    @staticmethod
    def centers_count(centers: torch.Tensor) -> int:
        """The number of identities (BoT's ``num_classes``)."""
        return centers.shape[0]

    def own_optimizer(self) -> torch.optim.Optimizer:
        """BoT's center optimizer: SGD with ``lr`` (no momentum, no weight decay, no schedule)."""
        return torch.optim.SGD(self.parameters(), lr=self.lr)

    def forward(self, heads, names, target, out, extra=None):
        features = extra["features"]
        total = None
        for centers, k in zip(self.centers, self.chosen):
            f = fp32(features[k])
            c = centers[target]
            floor = (self.centers_count(centers) - 1) * 1e-12  # BoT's clamped, masked-out distances
            to_features = (f - c.detach()).pow(2).sum(1).clamp(1e-12, 1e12).mean() + floor
            to_centers = (f.detach() - c).pow(2).sum(1).clamp(1e-12, 1e12).mean() + floor
            out[f"center/{names[k]}"] = to_features.detach()
            part = self.weight * to_features + (to_centers - to_centers.detach())  # the value: the weighted loss
            total = part if total is None else total + part
        return total
