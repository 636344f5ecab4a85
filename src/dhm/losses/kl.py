"""The pairwise KL matrix of every ordered head pair, in one batched contraction, and pair graphs: (H, H) weight
matrices saying which teacher -> student pairs a loss term counts (docs/method.md section 3)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..registry import Registry


def fp32(z: Tensor) -> Tensor:
    """Low-precision logits in float32 (softmax and log must not run in fp16/bf16); float64 stays float64."""
    return z.float() if z.dtype in (torch.float16, torch.bfloat16) else z


#: how ``eps`` enters a KL term, per the code a method's authors released (docs/method.md section 9)
SMOOTHING = ("renormalised", "teacher", "ratio")


def pair_kl(
    logits: Tensor,
    temperature: float = 1.0,
    eps: float = 1e-8,
    detach_teacher: bool = True,
    smoothing: str = "renormalised",
) -> Tensor:
    """Matrix ``kl[j, k] = mean_b KL(p~_j || p~_k)`` of every ordered head pair (teacher j, student k).

    Args:
        logits: (H, B, C) stacked head logits.
        temperature: T in p = softmax(z / T).
        eps: the smoothing's epsilon; 0 uses exact log-softmax (every form is then the exact KL).
        detach_teacher: the teacher side gets no gradient (DHM, DKS, ONE); ``False`` lets it through (the
            authors' OKDDip code).
        smoothing: how ``eps`` enters, as each method's authors wrote it:
            ``renormalised``: p~ = (p + eps) / (1 + C eps) on both sides (DHM's and DKS's released code);
            ``teacher``: sum_c (p_j + eps) (log(p_j + eps) - log p_k), the teacher alone shifted, not renormalised
            (ONE's and OKDDip's ``softmax + 1e-7``);
            ``ratio``: sum_c p_j log(eps + p_j / (p_k + eps)) (DML's TensorFlow ``kl_loss_compute``).
    """
    if smoothing not in SMOOTHING:
        raise ValueError(f"KL smoothing is one of {', '.join(SMOOTHING)}, got {smoothing!r}")
    z = fp32(logits) / temperature
    if eps > 0 and smoothing == "ratio":
        p = F.softmax(z, dim=-1)
        teacher = p.detach() if detach_teacher else p
        ratio = teacher[:, None] / (p[None] + eps)  # (H, H, B, C): p_j / (p_k + eps)
        return (teacher[:, None] * (ratio + eps).log()).sum(-1).mean(-1)
    if eps > 0 and smoothing == "renormalised":
        p = (F.softmax(z, dim=-1) + eps) / (1.0 + z.shape[-1] * eps)
        logp = p.log()
        teacher, log_teacher = p, logp
    else:
        logp = F.log_softmax(z, dim=-1)
        p = logp.exp()
        teacher = p + eps if smoothing == "teacher" else p
        log_teacher = teacher.log() if eps > 0 else logp
    if detach_teacher:
        teacher, log_teacher = teacher.detach(), log_teacher.detach()
    batch = z.shape[1]
    neg_entropy = (teacher * log_teacher).sum(-1).mean(-1)  # (H,): sum_c p_j log p_j, batch mean
    cross = torch.einsum("jbc,kbc->jk", teacher, logp) / batch  # (H, H): mean_b sum_c p_j log p_k
    return neg_entropy[:, None] - cross


def pair_matrix(pairs: Tensor, num_heads: int) -> Tensor:
    """(H(H-1),) values of the ordered pairs in row-major (teacher, student) order -> (H, H) with a zero diagonal.

    Pure reshapes (no boolean indexing, no host round trip): the row-major off-diagonal entries of an H x H
    matrix are, viewed as (H-1, H), exactly the rows of its flattened tail cut to width H+1."""
    rows = F.pad(pairs.view(num_heads - 1, num_heads), (0, 1))  # (H-1, H+1): a zero where the diagonal goes
    return F.pad(rows.flatten(), (1, 0)).view(num_heads, num_heads)


#: A pair graph by name: ``graph(head_names) -> (H, H)`` weights, ``W[j, k]`` the weight of KL(p_j || p_k).
PAIR_GRAPHS: Registry[Callable[[Sequence[str]], Tensor]] = Registry("pair graph")


@PAIR_GRAPHS.register("all")
def all_pairs(names: Sequence[str]) -> Tensor:
    """Every ordered pair of distinct heads, weight 1 (DHM, DKS)."""
    return 1.0 - torch.eye(len(names))


@PAIR_GRAPHS.register("gate-teaches")
def gate_teaches(names: Sequence[str]) -> Tensor:
    """The gated ensemble (the head named ``gate``, ONE) teaches every other head, weight 1."""
    if "gate" not in names:
        raise ValueError(
            f"the gate-teaches graph needs a head named 'gate' (model.branches=one:m); heads {list(names)}"
        )
    weights = torch.zeros(len(names), len(names))
    row = list(names).index("gate")
    weights[row] = 1.0
    weights[row, row] = 0.0
    return weights


@PAIR_GRAPHS.register("main-teaches")
def main_teaches(names: Sequence[str]) -> Tensor:
    """The main head teaches every branch (main -> head_k), weight 1."""
    weights = torch.zeros(len(names), len(names))
    weights[0, 1:] = 1.0
    return weights


def graph_weights(graph: Any, names: Sequence[str]) -> Tensor:
    """The (H, H) float weights of ``graph``: a registered name, a callable of the head names, a mapping
    ``{"teacher->student": weight}`` or an (H, H) nested list / tensor. The diagonal must be zero."""
    count = len(names)
    if isinstance(graph, str):
        weights = PAIR_GRAPHS.get(graph)(names)
    elif callable(graph):
        weights = torch.as_tensor(graph(names), dtype=torch.float32)
    elif isinstance(graph, Mapping):
        weights = torch.zeros(count, count)
        for pair, weight in graph.items():
            teacher, _, student = str(pair).partition("->")
            if teacher not in names or student not in names:
                raise ValueError(f"pair graph entry {pair!r}: heads are {list(names)} (write 'teacher->student')")
            weights[names.index(teacher), names.index(student)] = float(weight)
    else:
        weights = torch.as_tensor(graph, dtype=torch.float32)
    if tuple(weights.shape) != (count, count):
        raise ValueError(f"a pair graph over {count} heads is {count}x{count}, got shape {tuple(weights.shape)}")
    if bool(weights.diagonal().ne(0).any()):
        raise ValueError("a pair graph has a zero diagonal (a head does not mimic itself)")
    return weights.float()
