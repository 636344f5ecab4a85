"""The DHM loss: closed-form gradient, smoothing, modes, teacher detachment, dynamic laws, ramp-up."""

from __future__ import annotations

import math

import pytest
import torch

import dhm
from dhm.dynamic import parse_pair_law, rampup_weight
from dhm.losses import mimic_loss, pair_kl

H, B, C = 3, 5, 7


def _heads(dtype=torch.float64, scale=3.0):
    return [(torch.randn(B, C, dtype=dtype) * scale).requires_grad_() for _ in range(H)]


def _closed_form(heads, y, alpha, T, keep=None):
    """docs/method.md section 3 (eps = 0): dL/dz_k = (1/B)[(softmax(z_k) - onehot(y)) + alpha T sum_j (p_k - p_j)],
    the sum over teachers j != k whose pair (j, k) keeps its gradient."""
    onehot = torch.nn.functional.one_hot(y, C).to(heads[0].dtype)
    p = [torch.softmax(z.detach() / T, -1) for z in heads]
    grads = []
    for k, z in enumerate(heads):
        g = torch.softmax(z.detach(), -1) - onehot
        for j in range(len(heads)):
            if j != k and (keep is None or keep[j][k]):
                g = g + alpha * T * (p[k] - p[j])
        grads.append(g / B)
    return grads


@pytest.mark.parametrize("alpha,T", [(1.0, 1.0), (0.7, 2.5), (2.0, 0.5)])
def test_gradient_matches_closed_form_float64(alpha, T):
    heads, y = _heads(), torch.randint(0, C, (B,))
    loss = dhm.MimicLoss(alpha=alpha, temperature=T, eps=0.0)(heads, y)["loss"]
    grads = torch.autograd.grad(loss, heads)
    for got, expected in zip(grads, _closed_form(heads, y, alpha, T)):
        assert (got - expected).abs().max().item() < 1e-10


def test_smoothed_loss_equals_direct_formula():
    eps, alpha, T = 1e-8, 1.3, 2.0
    heads, y = _heads(), torch.randint(0, C, (B,))
    got = dhm.MimicLoss(alpha=alpha, temperature=T, eps=eps)(heads, y)["loss"].item()
    expected = 0.0
    for z in heads:
        for b in range(B):
            expected += -torch.log_softmax(z[b].detach(), -1)[y[b]].item() / B
    smooth = [((torch.softmax(z.detach() / T, -1) + eps) / (1 + C * eps)).tolist() for z in heads]
    for j in range(H):
        for k in range(H):
            if j != k:
                for b in range(B):
                    kl = sum(pj * (math.log(pj) - math.log(pk)) for pj, pk in zip(smooth[j][b], smooth[k][b]))
                    expected += alpha * T**2 * kl / B
    assert got == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_dsl_equals_dhm_with_alpha_zero():
    heads, y = _heads(), torch.randint(0, C, (B,))
    dsl = dhm.MimicLoss(mode="dsl")(heads, y)["loss"]
    zero = dhm.MimicLoss(mode="dhm", alpha=0.0)(heads, y)["loss"]
    assert dsl.item() == pytest.approx(zero.item(), abs=1e-14)
    for a, b in zip(torch.autograd.grad(dsl, heads), torch.autograd.grad(zero, heads)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-15)


def test_ce_mode_ignores_branches():
    heads, y = _heads(), torch.randint(0, C, (B,))
    out = dhm.MimicLoss(mode="ce")(heads, y)
    assert set(out) == {"loss", "ce/main"}
    assert out["loss"].item() == pytest.approx(torch.nn.functional.cross_entropy(heads[0], y).item(), abs=1e-14)
    grads = torch.autograd.grad(out["loss"], heads, allow_unused=True)
    assert grads[1] is None and grads[2] is None


def test_teacher_side_gets_no_gradient_from_a_pair_term():
    heads = _heads()
    kl = pair_kl(torch.stack(heads), temperature=1.5, eps=1e-8)
    for j in range(H):
        for k in range(H):
            if j != k:
                grads = torch.autograd.grad(kl[j, k], heads, retain_graph=True, allow_unused=True)
                assert grads[j] is None or grads[j].abs().max() == 0, (j, k)
                assert grads[k].abs().max() > 0


def test_single_tensor_is_one_head_and_keys_are_named():
    z, y = _heads()[0], torch.randint(0, C, (B,))
    out = dhm.MimicLoss()(z, y)
    assert set(out) == {"loss", "ce/main"}
    out = dhm.MimicLoss(head_names=("main", "a", "b"))(_heads(), y)
    assert {"ce/main", "ce/a", "ce/b", "kl", "kl/a->main", "kl/main->b", "loss"} <= set(out)
    assert len([k for k in out if k.startswith("kl/")]) == H * (H - 1)


def test_stopped_pairs_keep_their_value_but_lose_their_gradient():
    heads, y = _heads(), torch.randint(0, C, (B,))
    stopped = torch.tensor([True, False, False, True, False, True])  # row-major (teacher, student), j != k
    full = mimic_loss(heads, y, eps=0.0)
    masked = mimic_loss(heads, y, eps=0.0, stopped=stopped)
    assert masked["loss"].item() == pytest.approx(full["loss"].item(), abs=1e-14)
    pairs = [(j, k) for j in range(H) for k in range(H) if j != k]
    keep = [[True] * H for _ in range(H)]
    for (j, k), s in zip(pairs, stopped.tolist()):
        keep[j][k] = not s
    grads = torch.autograd.grad(masked["loss"], heads)
    for got, expected in zip(grads, _closed_form(heads, y, 1.0, 1.0, keep)):
        assert (got - expected).abs().max().item() < 1e-10


def test_pair_terms_stay_float32_under_autocast():
    """Autocast must not run the pair contraction in bf16 (it did: KL values were off by 1e-2)."""
    heads, y = [z.detach().float() for z in _heads()], torch.randint(0, C, (B,))
    reference = dhm.MimicLoss()(heads, y)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = dhm.MimicLoss()(heads, y)
    for key in reference:
        assert got[key].dtype == torch.float32
        torch.testing.assert_close(got[key], reference[key], rtol=1e-6, atol=1e-6)


def test_bf16_logits_are_computed_in_float32():
    heads = [z.detach().to(torch.bfloat16) for z in _heads()]
    out = dhm.MimicLoss()(heads, torch.randint(0, C, (B,)))
    assert out["loss"].dtype == torch.float32 and torch.isfinite(out["loss"])


# Sampled laws. N draws of P = 6 pairs: a frequency's standard error is sqrt(q(1-q)/N) <= 0.5/sqrt(N) = 0.0029 for
# N = 30000; we allow 6 standard errors (0.018), which a correct law exceeds with probability ~2e-9 per check, while a
# wrong law (e.g. k drawn from 0..P instead of 0..P-1, stop probability 0.39) is off by 20 standard errors.
N = 30_000
TOL = 6 * 0.5 / math.sqrt(N)


def _draws(law, n=N, pairs=6):
    torch.manual_seed(1234)
    return torch.stack([law(pairs, torch.device("cpu")) for _ in range(n)]).float()


def test_official_law_stop_probability_and_one_pair_kept():
    draws = _draws(parse_pair_law("official"))
    assert (draws.sum(1) <= 5).all()  # at least one of the 6 pairs keeps its gradient, every time
    freq = draws.mean(0)
    assert ((freq - (5 / 6) ** 6).abs() < TOL).all(), freq


@pytest.mark.parametrize("p", [0.2, 0.7])
def test_bernoulli_law_stop_probability(p):
    draws = _draws(parse_pair_law(f"bernoulli({p})"))
    assert ((draws.mean(0) - p).abs() < TOL).all()
    all_stopped = (draws.sum(1) == 6).float().mean().item()  # independence: all six stopped with p^6
    assert abs(all_stopped - p**6) < TOL


def test_law_parsing_and_errors():
    assert parse_pair_law(None) is None
    with pytest.raises(KeyError, match="did you mean official"):
        parse_pair_law("oficial")
    with pytest.raises(ValueError, match="0 <= p <= 1"):
        parse_pair_law("bernoulli(1.5)")
    with pytest.raises(ValueError, match="unknown method 'kd'"):
        dhm.MimicLoss(mode="kd")


def test_dynamic_loss_is_seedable():
    heads, y = _heads(), torch.randint(0, C, (B,))
    loss_fn = dhm.MimicLoss(dynamic="official")

    def grads(seed):
        torch.manual_seed(seed)
        return torch.autograd.grad(loss_fn(heads, y)["loss"], heads)

    a, b = grads(7), grads(7)
    assert all(torch.equal(x, z) for x, z in zip(a, b))


def test_rampup_weights_and_set_progress():
    assert rampup_weight("linear", 2.5, 10) == pytest.approx(0.25)
    assert rampup_weight("sigmoid", 0.0, 10) == pytest.approx(math.exp(-5))
    assert rampup_weight("sigmoid", 12.0, 10) == 1.0 and rampup_weight("linear", 3.0, 0) == 1.0
    heads, y = _heads(), torch.randint(0, C, (B,))
    loss_fn = dhm.MimicLoss(rampup_epochs=4, rampup="linear")
    dsl = dhm.MimicLoss(mode="dsl")(heads, y)["loss"]
    with pytest.raises(RuntimeError, match=r"call loss.set_progress\(epoch\).*progress=epoch"):
        loss_fn(heads, y)  # a ramp-up with nothing saying where training is: refused, never silently weight 0
    assert loss_fn(heads, y, progress=0.0)["loss"].item() == pytest.approx(dsl.item())  # weight 0 at epoch 0
    loss_fn.set_progress(2.0)
    out = loss_fn(heads, y)
    assert out["loss"].item() == pytest.approx(dsl.item() + 0.5 * out["kl"].item())
    assert out["kl_weight"].item() == pytest.approx(0.5) and out["kl_weighted"].item() == pytest.approx(
        0.5 * out["kl"].item()
    )
    static = dhm.MimicLoss()(heads, y)  # no ramp-up: no progress needed, weight alpha
    assert static["kl_weight"].item() == 1.0 and static["kl_weighted"].item() == pytest.approx(static["kl"].item())


def test_laws_at_the_extremes_reduce_to_dsl_and_static_gradients():
    """bernoulli(1) stops every pair gradient: DSL's gradients with DHM's value; bernoulli(0) is static DHM."""
    heads, y = _heads(), torch.randint(0, C, (B,))

    def grads(loss_fn):
        out = loss_fn(heads, y)
        return out["loss"], torch.autograd.grad(out["loss"], heads)

    all_stopped, static, dsl = (
        grads(dhm.MimicLoss(dynamic="bernoulli(1.0)")),
        grads(dhm.MimicLoss()),
        grads(dhm.MimicLoss(mode="dsl")),
    )
    none_stopped = grads(dhm.MimicLoss(dynamic="bernoulli(0.0)"))
    assert all_stopped[0].item() == pytest.approx(static[0].item())
    for a, b, c, d in zip(all_stopped[1], dsl[1], none_stopped[1], static[1]):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-14)
        torch.testing.assert_close(c, d, rtol=0, atol=1e-14)


def test_branched_output_names_its_heads_and_the_loss_checks_them():
    """The train-mode output is a named tuple (main, head1, head2); a loss given other names or another number of
    names is an error, never a head silently dropped."""
    import dhm

    model = dhm.create_model("cifar_resnet20", num_classes=10, widths=(8, 8, 16)).train()
    out = model(torch.randn(4, 3, 32, 32))
    assert out._fields == ("main", "head1", "head2") and out.main is out[0]
    y = torch.tensor([0, 1, 2, 3])
    assert {"ce/main", "ce/head2", "kl/head2->main"} <= set(dhm.MimicLoss()(out, y))
    with pytest.raises(ValueError, match="2 head names .* for an output of 3 heads"):
        dhm.MimicLoss(head_names=("main", "head1"))(out, y)
    with pytest.raises(ValueError, match="but the model's output names"):
        dhm.MimicLoss(head_names=("main", "aux1", "aux2"))(out, y)
    with pytest.raises(ValueError, match="for an output of 3 heads"):
        dhm.mimic_loss(tuple(out), y, names=["main", "head1"])
