"""The BNNeck of re-ID models (Luo et al. 2019, "Bag of Tricks"): pooled feature -> BatchNorm1d (bias frozen at 0)
-> bias-free identity classifier.

A model gets a neck by :func:`add_neck`, which replaces its classifier (its last ``nn.Linear``) with a
:class:`BNNeck`. In train mode the neck returns identity logits; in eval mode it returns the post-BN embedding, so
the deployed backbone is an embedding model. The pre-BN embedding is the pooled feature a branched model already
reports per head (``features=True``), which the triplet term reads. Branches of a model with a neck get a neck of
their own on their heads (:func:`match_neck`).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn


class BNNeck(nn.Module):
    """BatchNorm1d without a learned shift, then a bias-free linear classifier.

    * train mode: identity logits ``classifier(bn(x))``;
    * eval mode: the post-BN embedding ``bn(x)`` (what retrieval ranks and what a deployed model returns).

    Example:
        >>> neck = BNNeck(2048, 751)
        >>> logits = neck.train()(pooled)      # (B, 751)
        >>> emb = neck.eval()(pooled)          # (B, 2048)
    """

    def __init__(self, in_features: int, num_classes: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(in_features)
        self.bn.bias.requires_grad_(False)  # BoT: the BN's shift is frozen (at 0)
        self.classifier = nn.Linear(in_features, num_classes, bias=False)
        self.reset_parameters()

    @property
    def out_features(self) -> int:
        """Identity classes of the classifier."""
        return self.classifier.out_features

    def reset_parameters(self) -> None:
        """BoT's initialisation: BN weight 1 and bias 0, classifier weights ~ N(0, 0.001)."""
        self.bn.reset_parameters()
        nn.init.normal_(self.classifier.weight, std=0.001)

    def forward(self, x: Tensor) -> Tensor:
        x = self.bn(x)
        return self.classifier(x) if self.training else x


def has_neck(module: nn.Module) -> bool:
    """Whether ``module`` ends in a :class:`BNNeck` (anywhere in it)."""
    return any(isinstance(m, BNNeck) for m in module.modules())


def replace_last_linear(module: nn.Module, make: Callable[[nn.Linear], nn.Module], purpose: str) -> nn.Module:
    """``module`` with its last ``nn.Linear`` (its classifier) replaced by ``make(old)``, in place; returned for
    chaining. A ValueError naming ``purpose`` when it has none."""
    names = [n for n, m in module.named_modules() if isinstance(m, nn.Linear)]
    if not names:
        raise ValueError(f"{type(module).__name__} has no nn.Linear classifier to {purpose}")
    parent_name, _, attr = names[-1].rpartition(".")
    parent = module.get_submodule(parent_name) if parent_name else module
    setattr(parent, attr, make(getattr(parent, attr)))
    return module


def add_neck(module: nn.Module) -> nn.Module:
    """``module`` with its last ``nn.Linear`` replaced by a :class:`BNNeck` of the same sizes (in place; returned
    for chaining). A module that already has a neck is returned unchanged."""
    if has_neck(module):
        return module

    def neck(old: nn.Linear) -> nn.Module:
        return BNNeck(old.in_features, old.out_features).to(device=old.weight.device, dtype=old.weight.dtype)

    return replace_last_linear(module, neck, "put a BNNeck in place of")


def match_neck(backbone: nn.Module, head: nn.Module) -> nn.Module:
    """A branch ``head`` with a neck when the ``backbone`` has one (so every head ranks post-BN embeddings)."""
    return add_neck(head) if has_neck(backbone) else head


def head_dims(model: nn.Module) -> tuple[int, ...]:
    """The embedding size of every head, main first: the input size of each head's classifier (its pooled
    feature); empty when a head has no linear classifier."""
    heads = [model.backbone, *(b.head for b in model.branches.values())] if hasattr(model, "branches") else [model]
    dims = []
    for head in heads:
        last = [m for m in head.modules() if isinstance(m, (BNNeck, nn.Linear))]
        if not last:
            return ()
        dims.append(last[-1].bn.num_features if isinstance(last[-1], BNNeck) else last[-1].in_features)
    return tuple(dims)
