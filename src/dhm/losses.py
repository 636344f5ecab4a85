"""The DHM objective: cross-entropy on the heads plus pairwise mimicking (docs/method.md section 3).

All H(H-1) ordered pairs are computed in one batched contraction; pair gradients are switched by tensor masks
(``torch.where`` between a term and its detached copy), so values are always logged, shapes never change and
torch.compile never recompiles.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .dynamic import PairLaw, parse_pair_law, rampup_weight

# mode -> (cross-entropy on every head, pairwise mimicking)
MODES: dict[str, tuple[bool, bool]] = {"ce": (False, False), "dsl": (True, False), "dhm": (True, True)}


def _fp32(z: Tensor) -> Tensor:
    """Low-precision logits in float32 (softmax and log must not run in fp16/bf16); float64 stays float64."""
    return z.float() if z.dtype in (torch.float16, torch.bfloat16) else z


def pair_kl(logits: Tensor, temperature: float = 1.0, eps: float = 1e-8) -> Tensor:
    """Matrix ``kl[j, k] = mean_b KL(p~_j || p~_k)`` of every ordered head pair, teacher j detached.

    Args:
        logits: (H, B, C) stacked head logits.
        temperature: T in p = softmax(z / T).
        eps: smoothing p~ = (p + eps) / (1 + C eps), as released; 0 uses exact log-softmax.
    """
    z = _fp32(logits) / temperature
    if eps > 0:
        p = (F.softmax(z, dim=-1) + eps) / (1.0 + z.shape[-1] * eps)
        logp = p.log()
    else:
        logp = F.log_softmax(z, dim=-1)
        p = logp.exp()
    teacher, log_teacher = p.detach(), logp.detach()
    batch = z.shape[1]
    neg_entropy = (teacher * log_teacher).sum(-1).mean(-1)  # (H,): sum_c p_j log p_j, batch mean
    cross = torch.einsum("jbc,kbc->jk", teacher, logp) / batch  # (H, H): mean_b sum_c p_j log p_k
    return neg_entropy[:, None] - cross


def mimic_loss(
    logits: Sequence[Tensor] | Tensor,
    target: Tensor,
    *,
    mode: str = "dhm",
    alpha: float | Tensor = 1.0,
    temperature: float = 1.0,
    eps: float = 1e-8,
    stopped: Tensor | None = None,
    names: Sequence[str] | None = None,
    label_smoothing: float = 0.0,
) -> dict[str, Tensor]:
    """The loss of ``mode`` (``ce``, ``dsl``, ``dhm``) and its components.

    Args:
        logits: head logits, main first (a single tensor is one head).
        target: class indices (B,).
        alpha: weight of the mimicking sum (a tensor for a ramped weight).
        stopped: optional bool (H(H-1),) mask, pairs in row-major (teacher, student) order, of pair terms whose
            gradient is stopped this step (values still count).
        names: head names for the dict keys; default ``main, head1, ...``.
        label_smoothing: smoothing of the cross-entropy targets (the mimicking targets are never smoothed).

    Returns:
        ``{"loss": total, "ce/<head>": ..., "kl/<teacher>-><student>": ..., "kl": sum of pair terms}``.

    Example:
        >>> out = mimic_loss([z0, z1, z2], y)          # out["loss"].backward()
    """
    if mode not in MODES:
        raise ValueError(f"unknown loss mode {mode!r}; expected one of {', '.join(MODES)}")
    names = head_names(logits, names)
    heads = [logits] if isinstance(logits, Tensor) else list(logits)
    # Autocast would run the pair contraction (einsum -> bmm) in bf16/fp16: the whole loss stays in float32.
    with torch.autocast(heads[0].device.type, enabled=False):
        return _mimic_loss(heads, target, mode, alpha, temperature, eps, stopped, names, label_smoothing)


def head_names(logits: Sequence[Tensor] | Tensor, given: Sequence[str] | None) -> list[str] | None:
    """The names of the heads in ``logits``: its own (a branched model's output is a named tuple, fields ``main,
    head1, ...``), checked against ``given`` when both exist; a count or name mismatch is an error, never a head
    silently dropped."""
    count = 1 if isinstance(logits, Tensor) else len(logits)
    own = getattr(logits, "_fields", None)
    if given is not None and len(given) != count:
        raise ValueError(f"the loss was given {len(given)} head names {list(given)} for an output of {count} heads")
    if own is not None and given is not None and tuple(given) != tuple(own):
        raise ValueError(f"the loss was given head names {list(given)}, but the model's output names {list(own)}")
    return list(own) if own is not None else (list(given) if given is not None else None)


def _pair_matrix(pairs: Tensor, num_heads: int) -> Tensor:
    """(H(H-1),) values of the ordered pairs in row-major (teacher, student) order -> (H, H) with a zero diagonal.

    Pure reshapes (no boolean indexing, no host round trip): the row-major off-diagonal entries of an H x H
    matrix are, viewed as (H-1, H), exactly the rows of its flattened tail cut to width H+1."""
    rows = F.pad(pairs.view(num_heads - 1, num_heads), (0, 1))  # (H-1, H+1): a zero where the diagonal goes
    return F.pad(rows.flatten(), (1, 0)).view(num_heads, num_heads)


def _mimic_loss(heads, target, mode, alpha, temperature, eps, stopped, names, label_smoothing) -> dict[str, Tensor]:
    names = list(names) if names is not None else ["main"] + [f"head{k}" for k in range(1, len(heads))]
    ce_all, mimic = MODES[mode]
    heads_ce = heads if ce_all else heads[:1]
    out: dict[str, Tensor] = {}
    total = None
    for name, z in zip(names, heads_ce):  # H cross-entropies, H <= a handful: not the pairs
        ce = F.cross_entropy(_fp32(z), target, label_smoothing=label_smoothing)
        out[f"ce/{name}"] = ce
        total = ce if total is None else total + ce
    num_heads = len(heads)
    if mimic and num_heads > 1:
        kl = pair_kl(torch.stack(heads), temperature, eps)
        offdiag = ~torch.eye(num_heads, dtype=torch.bool, device=kl.device)
        if stopped is not None:
            halt = _pair_matrix(stopped.to(device=kl.device, dtype=torch.bool), num_heads)
            kl = torch.where(halt, kl.detach(), kl)
        pairs = (kl * offdiag).sum()
        total = total + alpha * temperature**2 * pairs
        out["kl"] = pairs.detach()
        logged = kl.detach()
        for j in range(num_heads):
            for k in range(num_heads):
                if j != k:  # logging views of the one matrix computed above
                    out[f"kl/{names[j]}->{names[k]}"] = logged[j, k]
    out["loss"] = total
    return out


class MimicLoss(nn.Module):
    """Parameter-free DHM loss module.

    Args:
        mode: ``ce`` (main head only), ``dsl`` (CE on every head) or ``dhm`` (CE + pairwise mimicking).
        alpha: weight of every pair term (released: 1).
        temperature: T; the mimicking sum is scaled by T^2 (released: 1).
        eps: probability smoothing before the log (released: 1e-8; 0 = exact).
        dynamic: stochastic pair-gradient law, e.g. ``"official"`` or ``"bernoulli(0.5)"``; ``None`` = static.
        rampup_epochs: length of the mimicking ramp-up (0 = off, as released).
        rampup: ramp-up shape, ``linear`` or ``sigmoid``.
        head_names: names used in the returned dict.
        label_smoothing: smoothing of the cross-entropy targets only; mimicking targets stay the heads' own
            predictions.

    Example:
        >>> loss_fn = dhm.MimicLoss(mode="dhm")
        >>> out = loss_fn(model(images), labels)      # out["loss"].backward(); log the rest
    """

    def __init__(
        self,
        mode: str = "dhm",
        alpha: float = 1.0,
        temperature: float = 1.0,
        eps: float = 1e-8,
        dynamic: str | PairLaw | None = None,
        rampup_epochs: float = 0.0,
        rampup: str = "linear",
        head_names: Sequence[str] | None = None,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"unknown loss mode {mode!r}; expected one of {', '.join(MODES)}")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.mode, self.alpha, self.temperature, self.eps = mode, alpha, temperature, eps
        self.label_smoothing = label_smoothing
        self.law = parse_pair_law(dynamic)
        self.rampup_epochs, self.rampup = rampup_epochs, rampup
        rampup_weight(rampup, 0.0, rampup_epochs)  # validates the name now, not mid-training
        self.head_names = tuple(head_names) if head_names is not None else None
        # The ramped weight is a tensor, so changing it never triggers a torch.compile recompile.
        self.register_buffer("ramp", torch.tensor(rampup_weight(rampup, 0.0, rampup_epochs)), persistent=False)

    def set_progress(self, epoch: float) -> None:
        """Tell the loss where training is (fractional epoch); sets the ramp-up weight of the mimicking term."""
        if self.rampup_epochs > 0:  # otherwise the weight is the constant alpha: no kernel per step
            self.ramp.fill_(rampup_weight(self.rampup, epoch, self.rampup_epochs))

    def forward(self, outputs: Sequence[Tensor] | Tensor, target: Tensor) -> dict[str, Tensor]:
        names = head_names(outputs, self.head_names)
        heads = [outputs] if isinstance(outputs, Tensor) else list(outputs)
        stopped = None
        if self.law is not None and self.mode == "dhm" and len(heads) > 1:
            stopped = self.law(len(heads) * (len(heads) - 1), heads[0].device)
        alpha = self.alpha * self.ramp if self.rampup_epochs > 0 else self.alpha
        return mimic_loss(
            heads,
            target,
            mode=self.mode,
            alpha=alpha,
            temperature=self.temperature,
            eps=self.eps,
            stopped=stopped,
            names=names,
            label_smoothing=self.label_smoothing,
        )
