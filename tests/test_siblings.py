"""DHM's siblings as methods: each one's loss computed independently in float64 on fixed outputs (written from the
papers' formulas, not from dhm's terms) and compared, where its gradients flow, and its branch layout on a
backbone: dsn, dks, dml, one, okddip, byot, cskd, pskd."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from helpers import TINY_RUN

import dhm
from dhm.cli import main
from dhm.config import load_config
from dhm.engine.build import build_loss

B, C = 6, 5


def _heads(count: int, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [(2 * torch.randn(B, C, generator=g, dtype=torch.float64)).requires_grad_() for _ in range(count)]


def _kl(teacher: torch.Tensor, student: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """mean over the batch of KL(softmax(t/T) || softmax(s/T)), written out."""
    p = torch.softmax(teacher / temperature, -1)
    return (p * (torch.log(p) - torch.log_softmax(student / temperature, -1))).sum(-1).mean()


def _loss(mode: str, count: int, overrides: tuple[str, ...] = (), progress: float = 0.0):
    cfg = load_config("smoke", [f"loss.mode={mode}", *overrides])
    names = ("main", *(f"head{k}" for k in range(1, count)))
    loss_fn = build_loss(cfg, names, num_classes=C, num_samples=10).double()
    loss_fn.set_progress(progress)
    return loss_fn


def test_dks_is_ce_on_every_head_plus_kl_over_all_ordered_pairs_at_t1_teacher_detached():
    heads, y = _heads(3), torch.randint(0, C, (B,), generator=torch.Generator().manual_seed(1))
    out = _loss("dks", 3, ("loss.eps=0",))(heads, y)  # exact KL (the authors' 1e-8 smoothing: test_fidelity.py)
    ce = sum(F.cross_entropy(h, y) for h in heads)
    kl = sum(_kl(heads[j].detach(), heads[k]) for j in range(3) for k in range(3) if j != k)
    torch.testing.assert_close(out["loss"], ce + kl, rtol=1e-12, atol=1e-12)
    # where gradients flow: with the teacher detached, a head's gradient comes from its CE and its student terms
    # only; with loss.detach=false the teacher side gets its share too
    for detach in (True, False):
        loss = _loss("dks", 3, (f"loss.detach={str(detach).lower()}", "loss.eps=0"))(heads, y)["loss"]
        got = torch.autograd.grad(loss, heads)
        teacher = (lambda h: h.detach()) if detach else (lambda h: h)
        ref = ce + sum(_kl(teacher(heads[j]), heads[k]) for j in range(3) for k in range(3) if j != k)
        want = torch.autograd.grad(ref, heads, retain_graph=True)
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)


def test_dks_t2_and_temperature_switches():
    heads, y = _heads(2, 2), torch.zeros(B, dtype=torch.long)
    out = _loss("dks", 2, ("loss.temperature=3", "loss.t2=true", "loss.eps=0"))(heads, y)
    ce = sum(F.cross_entropy(h, y) for h in heads)
    kl = _kl(heads[0].detach(), heads[1], 3.0) + _kl(heads[1].detach(), heads[0], 3.0)
    torch.testing.assert_close(out["loss"], ce + 9.0 * kl, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("progress", [0.0, 1.5, 2.0, 2.5])
def test_dsn_companion_weight_decays_linearly_and_stops(progress):
    heads, y = _heads(3, 3), torch.randint(0, C, (B,), generator=torch.Generator().manual_seed(4))
    overrides = ("train.epochs=4", "loss.options.aux_weight=0.5", "loss.options.aux_stop=2")
    out = _loss("dsn", 3, overrides, progress)(heads, y)
    weight = 0.5 * max(0.0, 1 - progress / 2) if progress < 2 else 0.0
    expected = F.cross_entropy(heads[0], y) + weight * (F.cross_entropy(heads[1], y) + F.cross_entropy(heads[2], y))
    torch.testing.assert_close(out["loss"], expected, rtol=1e-12, atol=1e-12)
    assert out["aux_weight"].item() == pytest.approx(weight)


def test_dsn_default_stop_is_the_end_of_the_run_and_needs_progress():
    cfg = load_config("smoke", ["loss.mode=dsn", "train.epochs=8"])
    assert cfg.loss.options.aux_stop == 8.0 and cfg.model.branches == "light-every-stage"
    loss_fn = build_loss(cfg, ("main", "head1", "head2"))
    with pytest.raises(RuntimeError, match="set_progress"):
        loss_fn([torch.randn(2, C)] * 3, torch.zeros(2, dtype=torch.long))


def test_dml_paper_form_is_ce_plus_the_mean_kl_to_the_other_peers():
    """The paper's 1 / (K - 1) mean (``loss.options.kl_reduce=mean``) with exact KL; the authors' sum and smoothing
    are tests/test_fidelity_siblings.py's."""
    heads, y = _heads(3, 5), torch.randint(0, C, (B,), generator=torch.Generator().manual_seed(6))
    out = _loss("dml", 3, ("loss.options.kl_reduce=mean", "loss.eps=0"))(heads, y)
    expected = sum(
        F.cross_entropy(heads[k], y) + sum(_kl(heads[j].detach(), heads[k]) for j in range(3) if j != k) / 2
        for k in range(3)
    )
    torch.testing.assert_close(out["loss"], expected, rtol=1e-12, atol=1e-12)


def test_dml_peers_share_no_parameter_and_strip_to_the_plain_network():
    model = dhm.create_model("cifar_resnet20", num_classes=10, branches="peers:3")
    main_ids = {id(p) for p in dhm.strip(model).parameters()}
    for branch in model.branches.values():
        assert not main_ids & {id(p) for p in branch.parameters()}
    model.train()
    out = model(torch.randn(2, 3, 32, 32))
    grads = torch.autograd.grad(out.head1.sum(), list(dhm.strip(model).parameters()), allow_unused=True)
    assert all(g is None for g in grads)  # a peer's output never reaches the main network's weights
    deployed = sum(p.numel() for p in dhm.strip(model).parameters())
    assert sum(p.numel() for p in model.parameters()) == 3 * deployed


def test_dsn_layout_puts_a_light_head_after_every_stage_but_the_last():
    model = dhm.create_model("cifar_resnet20", num_classes=10, branches="light-every-stage")
    assert [s.fork for s in model.specs] == [0, 1] and {s.builder for s in model.specs} == {"light"}
    with pytest.raises(ValueError, match="peers:K needs K >= 2"):
        dhm.create_model("cifar_resnet20", branches="peers:1")


@pytest.mark.parametrize("mode", ["dsn", "dsn-authors", "dks", "dml", "one", "byot", "okddip"])
def test_each_sibling_trains_end_to_end(mode, tmp_path):
    assert main(["train", "smoke", *TINY_RUN, f"loss.mode={mode}", f"train.out_dir={tmp_path / mode}"]) == 0
    assert (tmp_path / mode / "deploy.pt").is_file()


def test_cskd_is_anchor_ce_plus_t2_kl_from_the_detached_partner():
    z = _heads(1, 7)[0]  # rows 0, 2, 4 anchors; 1, 3, 5 their partners
    y = torch.tensor([0, 0, 3, 3, 1, 1])
    out = _loss("cskd", 1, ("loss.options.weight=0.7",))([z], y)
    anchors, partners = z[0::2], z[1::2]
    expected = F.cross_entropy(anchors, y[0::2]) + 0.7 * 16.0 * _kl(partners.detach(), anchors, 4.0)
    torch.testing.assert_close(out["loss"], expected, rtol=1e-12, atol=1e-12)
    (grad,) = torch.autograd.grad(out["loss"], z)
    assert grad[1::2].abs().sum() == 0 and grad[0::2].abs().sum() > 0  # partners get no gradient


def test_class_pairs_sampler_pairs_each_anchor_with_another_image_of_its_class():
    from dhm.data.samplers import build_sampler

    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2])
    sampler = build_sampler("class_pairs", labels)
    assert sampler.steps(4) == 6 and sampler.group == 2
    order = sampler.draw(6, 4, torch.Generator(), seed=3).view(-1, 2)
    assert sorted(order[:, 0].tolist()) == list(range(12))  # every image an anchor once
    assert (labels[order[:, 0]] == labels[order[:, 1]]).all() and (order[:, 0] != order[:, 1]).all()


def test_pskd_targets_mix_last_epochs_predictions_with_a_rising_weight():
    loss_fn = _loss("pskd", 1, ("train.epochs=4", "loss.options.memory=float16"))
    term = loss_fn.terms[0]
    term.memory = term.memory.half()  # .double() above converted the buffer; the run keeps float16 (as asked)
    z1, z2 = _heads(2, 8)
    y, index = torch.randint(0, C, (B,), generator=torch.Generator().manual_seed(9)), torch.arange(2, 2 + B)
    meta = {"index": index}
    loss_fn.set_progress(0.5)  # epoch 0: the target is the one-hot label (nothing remembered yet): plain CE
    torch.testing.assert_close(loss_fn([z1], y, meta)["loss"], F.cross_entropy(z1, y), rtol=1e-12, atol=1e-12)
    remembered = term.memory[index].double()
    torch.testing.assert_close(remembered, torch.softmax(z1.detach(), -1), rtol=1e-3, atol=1e-3)  # float16 memory
    loss_fn.set_progress(2.0)  # epoch 2 of 4: alpha 0.8 * (2 + 1) / 4 = 0.6
    soft = 0.4 * F.one_hot(y, C).double() + 0.6 * remembered
    expected = -(soft * torch.log_softmax(z2, -1)).sum(-1).mean()
    torch.testing.assert_close(loss_fn([z2], y, meta)["loss"], expected, rtol=1e-12, atol=1e-12)


def test_pskd_memory_is_in_the_checkpoint_and_a_resume_is_exact(tmp_path, monkeypatch, capsys):
    from dhm.engine.trainer import Trainer

    argv = ["train", "smoke", *TINY_RUN, "loss.mode=pskd", "train.epochs=2"]
    assert main([*argv, f"train.out_dir={tmp_path / 'whole'}"]) == 0
    original = Trainer.train_one_epoch

    def stop_at_second(self, model, epoch):
        if epoch == 1:
            raise KeyboardInterrupt
        return original(self, model, epoch)

    monkeypatch.setattr(Trainer, "train_one_epoch", stop_at_second)
    assert main([*argv, f"train.out_dir={tmp_path / 'cut'}"]) == 130
    monkeypatch.setattr(Trainer, "train_one_epoch", original)
    assert main([*argv, f"train.out_dir={tmp_path / 'cut'}", "train.resume=auto"]) == 0
    whole, cut = (torch.load(tmp_path / d / "last.pt", weights_only=True) for d in ("whole", "cut"))
    assert whole["loss"]["terms.0.memory"].abs().sum() > 0
    torch.testing.assert_close(whole["loss"]["terms.0.memory"], cut["loss"]["terms.0.memory"], rtol=0, atol=0)
    for key, value in whole["model"].items():
        torch.testing.assert_close(value, cut["model"][key], rtol=0, atol=0)


@pytest.mark.parametrize("mode", ["cskd", "pskd"])
def test_each_self_distillation_method_trains_end_to_end(mode, tmp_path):
    assert main(["train", "smoke", *TINY_RUN, f"loss.mode={mode}", f"train.out_dir={tmp_path / mode}"]) == 0


def test_one_is_ce_on_every_branch_and_the_ensemble_plus_ramped_t2_kl_from_the_detached_ensemble():
    """dhm's former form through its switches: exact KL (``loss.eps=0``) ramped every step (``loss.rampup_per=step``);
    the authors' defaults are tests/test_fidelity_siblings.py's."""
    heads, y = _heads(4, 10), torch.randint(0, C, (B,), generator=torch.Generator().manual_seed(11))
    names = ("main", "head1", "head2", "gate")
    cfg = load_config("smoke", ["loss.mode=one", "train.epochs=300", "loss.eps=0", "loss.rampup_per=step"])
    assert cfg.model.branches == "one:3" and cfg.loss.rampup_epochs == 80 and cfg.loss.temperature == 3
    loss_fn = build_loss(cfg, names).double()
    for epoch in (10.0, 100.0):
        loss_fn.set_progress(epoch)
        ramp = math.exp(-5 * (1 - epoch / 80) ** 2) if epoch < 80 else 1.0
        ce = sum(F.cross_entropy(h, y) for h in heads)
        kl = sum(_kl(heads[3].detach(), heads[k], 3.0) for k in range(3))
        torch.testing.assert_close(loss_fn(heads, y)["loss"], ce + ramp * 9.0 * kl, rtol=1e-12, atol=1e-12)


def test_ones_gate_learns_only_through_the_ensemble_ce_and_is_dropped_at_deployment():
    model = dhm.create_model("cifar_resnet20", num_classes=C, branches="one:3").train()
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, C, (4,))
    loss_fn = build_loss(load_config("smoke", ["loss.mode=one"]), model.head_names)
    loss_fn.set_progress(100.0)
    out = model(x)
    assert out._fields == ("main", "head1", "head2", "gate")
    gate_params = list(model.gate.parameters())
    total = loss_fn(out, y)["loss"]
    without_gate_ce = total - F.cross_entropy(out.gate, y)
    grads = torch.autograd.grad(without_gate_ce, gate_params, allow_unused=True, retain_graph=True)
    assert all(g is None or g.abs().max() == 0 for g in grads)  # the KL terms see the ensemble detached
    grads = torch.autograd.grad(total, gate_params)
    assert any(g.abs().max() > 0 for g in grads)
    plain = dhm.strip(model)
    assert not {id(p) for p in gate_params} & {id(p) for p in plain.parameters()}
    torch.testing.assert_close(model.eval()(x), plain.eval()(x))


def test_byot_deepest_teaches_by_predictions_and_features():
    """dhm's former form through its switches (T^2 on, the hint for every shallow head); the authors' defaults are
    tests/test_fidelity_siblings.py's. The KD term is the soft cross-entropy (the KL's gradient)."""
    from dhm.branches import HeadOutputs

    heads, y = _heads(3, 12), torch.randint(0, C, (B,), generator=torch.Generator().manual_seed(13))
    g = torch.Generator().manual_seed(14)
    feats = [torch.randn(B, 8, generator=g, dtype=torch.float64).requires_grad_() for _ in range(3)]
    names = ("main", "head1", "head2")
    cfg = load_config("smoke", ["loss.mode=byot", "loss.t2=true", "loss.options.hint_all=true"])
    loss_fn = build_loss(cfg, names).double()
    out = loss_fn(HeadOutputs(tuple(heads), tuple(feats)), y)
    alpha, t, lam = 0.3, 3.0, 0.03
    expected = F.cross_entropy(heads[0], y)
    teacher = torch.softmax(heads[0].detach() / t, -1)
    for k in (1, 2):
        soft_ce = -(teacher * torch.log_softmax(heads[k] / t, -1)).sum(-1).mean()
        expected = expected + (1 - alpha) * F.cross_entropy(heads[k], y) + alpha * t * t * soft_ce
        expected = expected + lam * torch.sqrt(((feats[k] - feats[0].detach()) ** 2).sum())
    torch.testing.assert_close(out["loss"], expected, rtol=1e-12, atol=1e-12)
    # the deepest head learns from its own CE only: neither the KL nor the hint reaches it
    (g_main,) = torch.autograd.grad(out["loss"], heads[0], retain_graph=True)
    torch.testing.assert_close(g_main, torch.autograd.grad(F.cross_entropy(heads[0], y), heads[0])[0])
    assert torch.autograd.grad(out["loss"], feats[0], allow_unused=True)[0] is None  # detached everywhere


def test_byot_layout_has_a_hinted_head_after_every_stage_but_the_last():
    model = dhm.create_model("cifar_resnet20", num_classes=C, branches="byot", features=True).train()
    out = model(torch.randn(2, 3, 32, 32))
    assert out.logits._fields == ("main", "head1", "head2")
    assert all(f.shape == (2, 64) for f in out.features)  # A_i f_i has the deepest feature's size
    replica = dhm.create_model("cifar_resnet20", num_classes=C, branches="byot:replicate")
    assert {s.builder for s in replica.specs} == {"byot-replicate"}


def test_okddip_peers_learn_from_attention_mixed_targets_and_the_leader_from_their_mean():
    from dhm.branches import HeadOutputs

    heads, y = _heads(4, 15), torch.randint(0, C, (B,), generator=torch.Generator().manual_seed(16))
    g = torch.Generator().manual_seed(17)
    feats = tuple(torch.randn(B, 8, generator=g, dtype=torch.float64) for _ in range(4))
    scores = torch.randn(B, 3, 3, generator=g, dtype=torch.float64).requires_grad_()
    names = ("main", "head1", "head2", "head3")
    t = 3.0
    former = ["loss.options.mix=probabilities", "loss.eps=0", "loss.rampup_per=step"]  # dhm's former form
    for detach in (False, True):  # the authors' default: targets not detached
        cfg = load_config(
            "smoke", ["loss.mode=okddip", "train.epochs=300", f"loss.detach={str(detach).lower()}", *former]
        )
        loss_fn = build_loss(cfg, names).double()
        loss_fn.set_progress(100.0)  # past the ramp-up (80 of 300 epochs): weight 1
        alpha = scores.softmax(-1)
        out = loss_fn(HeadOutputs(tuple(heads), feats, {"attention": alpha}), y)
        p = [torch.softmax(h / t, -1) for h in heads]
        sg = (lambda v: v.detach()) if detach else (lambda v: v)
        kd = 0.0
        for a in range(3):
            mixed = sg(sum(alpha[:, a, b : b + 1] * p[b + 1] for b in range(3)))
            kd = kd + (mixed * (mixed.log() - torch.log_softmax(heads[a + 1] / t, -1))).sum(-1).mean()
        mean = sg((p[1] + p[2] + p[3]) / 3)
        kd = kd + (mean * (mean.log() - torch.log_softmax(heads[0] / t, -1))).sum(-1).mean()
        expected = sum(F.cross_entropy(h, y) for h in heads) + t * t * kd
        torch.testing.assert_close(out["loss"], expected, rtol=1e-10, atol=1e-12)
        (g_scores,) = torch.autograd.grad(out["loss"], scores, allow_unused=True)
        # the attention learns only through undetached targets
        assert (g_scores is None or g_scores.abs().max() == 0) if detach else g_scores.abs().max() > 0


def test_okddip_layout_is_m_peers_beside_the_leader_with_attention():
    model = dhm.create_model("cifar_resnet20", num_classes=C, branches="okddip:3", features=True).train()
    out = model(torch.randn(2, 3, 32, 32))
    assert out.logits._fields == ("main", "head1", "head2", "head3") and out.attention.shape == (2, 3, 3)
    attention_ids = {id(p) for p in model.attention.parameters()}
    assert attention_ids and not attention_ids & {id(p) for p in dhm.strip(model).parameters()}


def test_cskd_and_byot_switches():
    z = _heads(1, 18)[0]
    y = torch.tensor([0, 0, 3, 3, 1, 1])
    out = _loss("cskd", 1, ("loss.t2=false", "loss.detach=false"))([z], y)
    expected = F.cross_entropy(z[0::2], y[0::2]) + _kl(z[1::2], z[0::2], 4.0)  # no T^2; the partner not detached
    torch.testing.assert_close(out["loss"], expected, rtol=1e-12, atol=1e-12)
    (grad,) = torch.autograd.grad(out["loss"], z)
    assert grad[1::2].abs().sum() > 0  # now the partners get a gradient
    from dhm.branches import HeadOutputs

    heads = _heads(2, 19)
    feats = tuple(torch.randn(B, 4, dtype=torch.float64) for _ in range(2))
    loss_fn = _loss("byot", 2, ("loss.detach=false", "loss.options.hint_weight=0"))
    out = loss_fn(HeadOutputs(tuple(heads), feats), y)
    (g_main,) = torch.autograd.grad(out["loss"], heads[0])
    assert not torch.allclose(g_main, torch.autograd.grad(F.cross_entropy(heads[0], y), heads[0])[0])
