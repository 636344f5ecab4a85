"""DHM, ONE, OKDDip, BYOT, CS-KD, DML and BoT's identity and triplet losses as their authors wrote them, in float64:
each reference is written here from the authors' released code (cited: repository@commit:file:lines); dhm's loss,
built as a run builds it from a resolved config at the method's defaults, equals it in value and gradient to 1e-10
on logits of std 1, 3 and 10, and the ramp-ups equal the authors' at every step of a whole run."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import dhm
from dhm.branches import HeadOutputs
from dhm.config import load_config
from dhm.engine.build import build_loss

B, C, D = 6, 5, 16
STDS = [1.0, 3.0, 10.0]


def _logits(heads: int, std: float, seed: int, rows: int = B) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [(std * torch.randn(rows, C, generator=g, dtype=torch.float64)).requires_grad_() for _ in range(heads)]


def _labels(seed: int = 7, rows: int = B) -> torch.Tensor:
    return torch.randint(0, C, (rows,), generator=torch.Generator().manual_seed(seed))


def _same(ours: torch.Tensor, theirs: torch.Tensor, leaves: list[torch.Tensor]) -> None:
    """Equal in value and in the gradient with respect to every leaf."""
    torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-10)
    for a, b in zip(torch.autograd.grad(ours, leaves, retain_graph=True), torch.autograd.grad(theirs, leaves)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def _sigmoid_rampup(current: float, rampup_length: float) -> float:
    """Lan1991Xu/ONE_NeurIPS2018@54afde3 utils/ramps.py:4-11 (and DefangChen/OKDDip@c6a05de train_GL.py:372-380)."""
    if rampup_length == 0:
        return 1.0
    current = min(max(current, 0.0), rampup_length)
    phase = 1.0 - current / rampup_length
    return float(math.exp(-5.0 * phase * phase))


# --- DHM --------------------------------------------------------------------------------------------------------


def _dhm_kl(logits_q: torch.Tensor, logits_p: torch.Tensor, T: float) -> torch.Tensor:
    """d-li14/DHM@c67639d utils/metric.py:7-15: T^2 KL(p~ || q~), both smoothed (p + 1e-8) / (1 + C 1e-8)."""
    b, c = logits_p.size()
    p, q = F.softmax(logits_p / T, dim=1), F.softmax(logits_q / T, dim=1)
    epsilon = 1e-8
    _p = (p + epsilon * torch.ones(b, c, dtype=p.dtype)) / (1.0 + c * epsilon)
    _q = (q + epsilon * torch.ones(b, c, dtype=q.dtype)) / (1.0 + c * epsilon)
    return (T**2) * torch.mean(torch.sum(_p * torch.log(_p / _q), dim=1))


@pytest.mark.parametrize("std", STDS)
def test_dhm_is_the_authors_loss(std):
    """d-li14/DHM@c67639d cifar.py:298-313 (--mimic, defaults alpha 1, T 1 at :68-71): every head's CE plus
    alpha KLDivLoss(head, other.detach(), T) over every ordered pair."""
    heads, y = _logits(3, std, seed=11), _labels()
    theirs = sum(F.cross_entropy(o, y) for o in heads) + sum(
        1.0 * _dhm_kl(o, other.detach(), 1.0) for o in heads for other in heads if other is not o
    )
    ours = build_loss(load_config("smoke", ["loss.mode=dhm"]), ("main", "head1", "head2")).double()(tuple(heads), y)
    _same(ours["loss"], theirs, heads)


# --- ONE --------------------------------------------------------------------------------------------------------


def _one_kl(pred: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """Lan1991Xu/ONE_NeurIPS2018@54afde3 loss/kl_loss.py:13-23: T = 3, target softmax(label / T) + 1e-7, detached."""
    T = 3
    predict = F.log_softmax(pred / T, dim=1)
    target = (F.softmax(label / T, dim=1) + 10 ** (-7)).detach()
    return T * T * ((target * (target.log() - predict)).sum(1).sum() / target.size()[0])


@pytest.mark.parametrize("std", STDS)
def test_one_is_the_authors_loss(std):
    """cifar_one.py:284-304 of the same commit: CE of the three branches and of the gated ensemble (outputs4) plus
    consistency_weight times KL(branch || ensemble) for each branch; the weight set once per epoch."""
    heads, y = _logits(4, std, seed=12), _labels()  # main, head1, head2, gate (the ensemble)
    cfg = load_config("smoke", ["loss.mode=one", "train.epochs=300"])
    assert (cfg.loss.rampup_epochs, cfg.loss.rampup_per, cfg.loss.eps) == (80.0, "epoch", 1e-7)
    loss = build_loss(cfg, ("main", "head1", "head2", "gate")).double()
    epoch = 37
    weight = _sigmoid_rampup(epoch, 80)
    theirs = sum(F.cross_entropy(o, y) for o in heads) + weight * sum(_one_kl(o, heads[3]) for o in heads[:3])
    _same(loss(tuple(heads), y, progress=epoch + 0.6)["loss"], theirs, heads)
    exact = build_loss(load_config("smoke", ["loss.mode=one", "loss.eps=0"]), ("main", "head1", "head2", "gate"))
    with torch.no_grad():
        differs = abs(float(exact.double()(tuple(heads), y, progress=300.0)["loss"] - loss(tuple(heads), y)["loss"]))
    assert differs > 1e-9  # the exact-KL switch is another loss


@pytest.mark.parametrize("mode", ["one", "okddip"])
def test_one_and_okddip_ramp_their_weight_once_per_epoch_over_a_whole_run(mode):
    """At every step of a 300-epoch run (3 steps an epoch) the weight is the authors' sigmoid_rampup(epoch, 80);
    ``loss.rampup_per=step`` is dhm's former per-step ramp-up."""
    cfg = load_config("smoke", [f"loss.mode={mode}", "train.epochs=300"])
    loss = build_loss(cfg, None, num_classes=C)
    term = loss.terms[-1]
    for epoch in range(300):
        for step in range(3):
            loss.set_progress(epoch + step / 3)
            assert float(term.ramp) == pytest.approx(_sigmoid_rampup(epoch, 80), rel=1e-6, abs=1e-12)
    stepped = build_loss(load_config("smoke", [f"loss.mode={mode}", "train.epochs=300", "loss.rampup_per=step"]), None)
    stepped.set_progress(10.5)
    assert float(stepped.terms[-1].ramp) == pytest.approx(math.exp(-5 * (1 - 10.5 / 80) ** 2), rel=1e-6)


# --- OKDDip -----------------------------------------------------------------------------------------------------


def _okddip_kl(output_batch: torch.Tensor, teacher_outputs: torch.Tensor, T: float = 3.0) -> torch.Tensor:
    """DefangChen/OKDDip@c6a05de utils.py:163-181 (KL_Loss): T^2 KLDivLoss(batchmean)(log_softmax(s / T),
    softmax(t / T) + 1e-7), the target not detached."""
    output_batch = F.log_softmax(output_batch / T, dim=1)
    teacher_outputs = F.softmax(teacher_outputs / T, dim=1) + 10 ** (-7)
    return T * T * F.kl_div(output_batch, teacher_outputs, reduction="batchmean")


def _okddip_authors(peers, leader, pooled, query_weight, key_weight, y, consistency_weight, alpha=1.0):
    """DefangChen/OKDDip@c6a05de models/model_cifar/resnet_GL.py:195-246 (en=False: the peers' logits ``pro``, their
    shared projections, energy = q k^T, attention = softmax, x_m = pro attention^T, the leader ``x_stu`` a branch
    outside the attention) and train_GL.py:97-104 (the loss)."""
    pro = torch.stack(peers, -1)  # B x num_classes x m
    proj_q = torch.stack([h @ query_weight.T for h in pooled], 1)  # B x m x C/8
    proj_k = torch.stack([h @ key_weight.T for h in pooled], 1)
    energy = torch.bmm(proj_q, proj_k.permute(0, 2, 1))
    attention = F.softmax(energy, dim=-1)
    x_m = torch.bmm(pro, attention.permute(0, 2, 1))
    loss_true, loss_group = 0, 0
    for i in range(len(peers)):
        loss_true += F.cross_entropy(pro[:, :, i], y)
        loss_group += _okddip_kl(pro[:, :, i], x_m[:, :, i])
    return (
        loss_true
        + F.cross_entropy(leader, y)
        + alpha * consistency_weight * (loss_group + _okddip_kl(leader, torch.mean(pro, dim=2)))
    )


@pytest.mark.parametrize("std", STDS)
def test_okddip_is_the_authors_loss_and_attention(std):
    """The leader is dhm's main head, the peers its branches; the attention is the model's own module (its
    projections Linear(C, C/8, bias=False) as resnet_GL.py:144-145). Value and gradient with respect to every
    logit, every pooled feature and both projections."""
    model = dhm.create_model("cifar_resnet20", num_classes=C, widths=(8, 8, D), branches="okddip:3").double()
    attention = model.attention
    assert tuple(attention.query.weight.shape) == (D // 8, D) and attention.query.bias is None
    logits, y = _logits(4, std, seed=13), _labels()
    g = torch.Generator().manual_seed(14)
    pooled = [torch.randn(B, D, generator=g, dtype=torch.float64).requires_grad_() for _ in range(4)]
    cfg = load_config("smoke", ["loss.mode=okddip", "train.epochs=300"])
    loss = build_loss(cfg, model.head_names).double()
    weights = attention(None, logits, pooled)["attention"]
    outputs = HeadOutputs(tuple(logits), tuple(pooled), {"attention": weights})
    ours = loss(outputs, y, progress=41.3)["loss"]
    theirs = _okddip_authors(
        logits[1:], logits[0], pooled[1:], attention.query.weight, attention.key.weight, y, _sigmoid_rampup(41, 80)
    )
    _same(ours, theirs, [*logits, *pooled[1:], attention.query.weight, attention.key.weight])
    former = build_loss(load_config("smoke", ["loss.mode=okddip", "loss.options.mix=probabilities"]), None).double()
    with torch.no_grad():
        assert abs(float(former(outputs, y, progress=300.0)["loss"] - loss(outputs, y)["loss"])) > 1e-6


# --- BYOT -------------------------------------------------------------------------------------------------------


def _byot_authors(outputs, outputs_feature, labels, loss_coefficient=0.3, feature_loss_coefficient=0.03, T=3.0):
    """ArchipLab-LinfengZhang/pytorch-self-distillation-final@47ca93b train.py:28-31 (the soft CrossEntropy, no
    T^2) and :146-163: outputs deepest first; the feature term skips index 1 (the deepest shallow classifier).
    ``outputs_feature[i]`` for i >= 1 stands for adaptation_layers[i-1](feature_i)."""

    def soft_ce(outputs, targets):
        log_softmax_outputs = F.log_softmax(outputs / T, dim=1)
        softmax_targets = F.softmax(targets / T, dim=1)
        return -(log_softmax_outputs * softmax_targets).sum(dim=1).mean()

    loss = F.cross_entropy(outputs[0], labels)
    teacher_output, teacher_feature = outputs[0].detach(), outputs_feature[0].detach()
    for index in range(1, len(outputs)):
        loss += soft_ce(outputs[index], teacher_output) * loss_coefficient
        loss += F.cross_entropy(outputs[index], labels) * (1 - loss_coefficient)
        if index != 1:
            loss += torch.dist(outputs_feature[index], teacher_feature) * feature_loss_coefficient
    return loss


@pytest.mark.parametrize("std", STDS)
def test_byot_is_the_authors_loss(std):
    """dhm's heads are the deepest then the shallow ones in fork order (shallowest first); the authors' list is
    deepest first, so their index 1 is dhm's last head."""
    logits, y = _logits(4, std, seed=15), _labels()
    g = torch.Generator().manual_seed(16)
    feats = [torch.randn(B, D, generator=g, dtype=torch.float64).requires_grad_() for _ in range(4)]
    cfg = load_config("smoke", ["loss.mode=byot"])
    assert (cfg.loss.t2, cfg.loss.alpha, cfg.loss.temperature) == (False, 0.3, 3.0)
    names = ("main", "head1", "head2", "head3")
    ours = build_loss(cfg, names).double()(HeadOutputs(tuple(logits), tuple(feats)), y)["loss"]
    order = [0, 3, 2, 1]  # the authors' deepest-first order of dhm's heads
    theirs = _byot_authors([logits[i] for i in order], [feats[i] for i in order], y)
    _same(ours, theirs, [*logits, *feats[1:3]])  # feats[0] is a detached target; head3 has no hint
    every = build_loss(load_config("smoke", ["loss.mode=byot", "loss.options.hint_all=true"]), names).double()
    with torch.no_grad():
        outputs = HeadOutputs(tuple(logits), tuple(feats))
        assert float(every(outputs, y)["hint"]) > float(build_loss(cfg, names).double()(outputs, y)["hint"])


# --- CS-KD ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("std", STDS)
def test_cskd_is_the_authors_loss(std):
    """alinlab/cs-kd@b447f25 train.py:95-105 (KDLoss: KLDivLoss(sum) of log_softmax(input / T) and softmax(target /
    T), times T^2, over the anchors) and :130-139 (anchors the first half, partners the second, run without
    gradient; loss = CE(anchors) + lamda KDLoss, lamda 1, T 4). dhm's batch interleaves (anchor, partner)."""
    (z,), y = _logits(1, std, seed=17, rows=2 * B), _labels(rows=2 * B)
    y = y.view(B, 2)[:, 0].repeat_interleave(2)  # each pair shares its class
    anchors, partners, labels = z[0::2], z[1::2], y[0::2]
    T = 4.0
    kd = F.kl_div(F.log_softmax(anchors / T, 1), F.softmax(partners.detach() / T, 1), reduction="sum")
    theirs = F.cross_entropy(anchors, labels) + 1.0 * kd * T**2 / anchors.size(0)
    ours = build_loss(load_config("smoke", ["loss.mode=cskd"]), None).double()(z, y)["loss"]
    _same(ours, theirs, [z])


# --- DML (the per-peer loss; the update is tests/test_dml_alternating.py) -----------------------------------------


@pytest.mark.parametrize("std", STDS)
def test_dml_loss_is_the_authors_for_three_peers(std):
    """YingZhangDUT/Deep-Mutual-Learning@34a2058 train_models.py:60-67 and :88-96: network i's loss is its CE plus
    the sum over the others j of mean_b sum_c p_j log(1e-8 + p_j / (p_i + 1e-8)) (dhm's joint sum of the K losses,
    each teacher detached as the authors' per-network var_list); ``loss.options.kl_reduce=mean`` is the paper's."""
    heads, y = _logits(3, std, seed=18), _labels()

    def kl_loss_compute(logits1, logits2):
        pred1, pred2 = F.softmax(logits1, 1), F.softmax(logits2, 1)
        return (pred2 * torch.log(1e-8 + pred2 / (pred1 + 1e-8))).sum(1).mean()

    theirs = sum(
        F.cross_entropy(heads[i], y) + sum(kl_loss_compute(heads[i], heads[j].detach()) for j in range(3) if j != i)
        for i in range(3)
    )
    cfg = load_config("smoke", ["loss.mode=dml", "model.branches=peers:3", "loss.options.peer_update=joint"])
    ours = build_loss(cfg, ("main", "head1", "head2")).double()(tuple(heads), y)["loss"]
    _same(ours, theirs, heads)


# --- BoT's identity and triplet losses ----------------------------------------------------------------------------


def _bot_triplet(global_feat, labels, margin=0.3):
    """michuanhaohao/reid-strong-baseline@3da7e6f layers/triplet_loss.py:21-35 (euclidean_dist), :38-70
    (hard_example_mining) and :93-116 (MarginRankingLoss(dist_an, dist_ap, 1) with margin 0.3)."""
    m = global_feat.size(0)
    xx = torch.pow(global_feat, 2).sum(1, keepdim=True).expand(m, m)
    dist = xx + xx.t()
    dist = torch.addmm(dist, global_feat, global_feat.t(), beta=1, alpha=-2).clamp(min=1e-12).sqrt()
    is_pos = labels.expand(m, m).eq(labels.expand(m, m).t())
    is_neg = labels.expand(m, m).ne(labels.expand(m, m).t())
    dist_ap = torch.max(dist[is_pos].contiguous().view(m, -1), 1)[0]
    dist_an = torch.min(dist[is_neg].contiguous().view(m, -1), 1)[0]
    return F.margin_ranking_loss(dist_an, dist_ap, torch.ones_like(dist_an), margin=margin)


def _bot_xent(inputs, targets, num_classes, epsilon=0.1):
    """layers/triplet_loss.py:118-150 of the same commit (CrossEntropyLabelSmooth, epsilon 0.1)."""
    log_probs = F.log_softmax(inputs, dim=1)
    onehot = torch.zeros(log_probs.size(), dtype=inputs.dtype).scatter_(1, targets.unsqueeze(1), 1)
    targets = (1 - epsilon) * onehot + epsilon / num_classes
    return (-targets * log_probs).mean(0).sum()


@pytest.mark.parametrize("std", STDS)
def test_bot_identity_and_triplet_losses_are_bots(std):
    """modeling/__init__.py + layers/__init__.py:make_loss of the same commit, 'softmax_triplet' without the center
    loss: xent(score, target) + triplet(feat, target)[0]; P x K = 4 x 2 batch."""
    (z,), y = _logits(1, std, seed=19, rows=8), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    feat = (std * torch.randn(8, D, generator=torch.Generator().manual_seed(20), dtype=torch.float64)).requires_grad_()
    cfg = load_config("market1501/resnet50", ["loss.mode=ce"])
    assert cfg.loss.supervision.center_weight == 0
    ours = build_loss(cfg, ("main",), num_classes=C, dims=(D,)).double()(HeadOutputs((z,), (feat,)), y)["loss"]
    theirs = _bot_xent(z, y, C) + _bot_triplet(feat, y)
    _same(ours, theirs, [z, feat])


# --- DSN as its authors' code (dsn-authors) -----------------------------------------------------------------------


def _caffe_squared_hinge(bottom_data: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """s9xie/DSN@065e498 src/caffe/layers/loss_layer.cpp:13 (C_ = 1) and :244-294 (SquaredHingeLossLayer): the
    forward flips the true class's sign and keeps max(0, 1 + diff); the loss is dot(diff, diff) / num (the backward
    scales by 2 C_ / num after flipping back, the gradient of that loss)."""
    num = bottom_data.size(0)
    diff = bottom_data.clone()
    rows = torch.arange(num)
    diff[rows, label] = diff[rows, label] * -1
    diff = torch.clamp(1 + diff, min=0)
    return (diff * diff).sum() / num


@pytest.mark.parametrize("std", STDS)
def test_dsn_authors_is_the_squared_hinge_on_every_head_then_the_main_one_alone(std):
    """examples/best_augmented_cifar10_7.97/cifar-10.prototxt of the same commit: a squaredhingeloss layer on each
    companion (ip_svm1..3) and on the output (pool3), each of weight 1, summed; finetune_cifar-10.prototxt (the
    fine-tune after the first of the four phases) has the output's alone."""
    heads, y = _logits(3, std, seed=21), _labels()
    cfg = load_config("smoke", ["loss.mode=dsn-authors", "train.epochs=8"])
    assert cfg.model.branches == "linear-every-stage" and cfg.loss.options.aux_stop == 2.0
    loss = build_loss(cfg, ("main", "head1", "head2")).double()
    with_companions = sum(_caffe_squared_hinge(h, y) for h in heads)
    _same(loss(tuple(heads), y, progress=1.9)["loss"], with_companions, heads)
    ours = loss(tuple(heads), y, progress=2.0)["loss"]
    theirs = _caffe_squared_hinge(heads[0], y)
    torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-10)
    (grad,) = torch.autograd.grad(ours, heads[0])
    torch.testing.assert_close(grad, torch.autograd.grad(theirs, heads[0])[0], rtol=1e-10, atol=1e-12)


def test_dsn_authors_companions_are_linear_on_the_unpooled_maps_at_their_own_learning_rate():
    """cifar-10.prototxt: ip_svm layers are innerproduct layers on the conv output (xavier filler, constant bias) at
    blobs_lr 0.001 with the power_inv policy; solver.cpp of the same commit: local_rate = rate * blobs_lr * (1 +
    localgamma iter)^-localpower, localgamma 1e-4, localpower 0.75 (cifar-10_solver.prototxt)."""
    from dhm.engine.optim import build_optimizer, build_scheduler

    model = dhm.create_model("cifar_resnet20", num_classes=10, widths=(8, 8, 16), branches="linear-every-stage:32")
    head = model.branches["head1"].head
    assert head.fc.in_features == 8 * 32 * 32 and model.branches["head2"].head.fc.in_features == 8 * 16 * 16
    assert float(head.fc.weight.detach().abs().max()) <= math.sqrt(3.0 / head.fc.in_features)
    assert not head.fc.bias.detach().any()
    x = torch.randn(2, 8, 32, 32)
    torch.testing.assert_close(head(x), x.flatten(1) @ head.fc.weight.T + head.fc.bias)
    with pytest.raises(ValueError, match="built for 32x32 maps"):
        head(torch.randn(2, 8, 16, 16))
    cfg = load_config("smoke", ["loss.mode=dsn-authors", "optim.schedule=constant", "optim.lr=0.025"])
    optimizer = build_optimizer(model, cfg.optim, 0.001)
    scheduler = build_scheduler(optimizer, cfg.optim, 6, 10, "power_inv")
    branch_ids = {id(p) for p in model.branches.parameters()}
    assert {id(p) for p in optimizer.param_groups[1]["params"]} == branch_ids
    for step in range(40):
        want = 0.025 * 0.001 * (1.0 + 1e-4 * step) ** -0.75
        assert optimizer.param_groups[1]["lr"] == pytest.approx(want, rel=1e-12)
        assert optimizer.param_groups[0]["lr"] == pytest.approx(0.025)
        optimizer.step()
        scheduler.step()
