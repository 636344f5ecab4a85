"""The re-ID model parts: BNNeck on every head (train: identity logits, eval: the post-BN embedding), last stride 1 in
the main path and the branch copies, weights from a local state_dict, hub keywords that would download refused,
random erasing and [height, width] image sizes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import dhm
from dhm.branches import BNNeck, has_neck
from dhm.config import load_config
from dhm.data.augment import AUGMENTS, apply_batch, draw_params
from dhm.data.sizes import image_hw
from dhm.engine.build import build_model
from dhm.errors import CheckpointError, ConfigError, DataError
from dhm.models.pretrained import load_pretrained


def test_bnneck_on_every_head_returns_logits_in_train_and_embeddings_in_eval():
    model = dhm.create_model("cifar_resnet20", num_classes=7, neck="bnneck", features=True)
    heads = [model.backbone, *(b.head for b in model.branches.values())]
    assert all(has_neck(h) for h in heads)
    neck = model.backbone.fc
    assert isinstance(neck, BNNeck) and neck.classifier.bias is None and not neck.bn.bias.requires_grad
    x = torch.randn(4, 3, 32, 16)
    out = model.train()(x)
    assert [z.shape for z in out.logits] == [(4, 7)] * 3
    assert out.features[0].shape == (4, 64)  # the pre-BN pooled embedding (what the triplet term reads)
    model.eval()
    emb = model(x)
    assert emb.shape == (4, 64)
    pooled = model.backbone.avgpool(
        model.backbone.layer3(model.backbone.layer2(model.backbone.layer1(model.backbone.forward_stem(x))))
    ).flatten(1)
    torch.testing.assert_close(emb, neck.bn(pooled))  # post-BN
    evals = model.forward_heads(x, features=True)
    assert [e.shape for e in evals.logits] == [(4, 64), (4, 128), (4, 64)]  # every head's post-BN embedding
    plain = dhm.strip(model)
    assert plain is model.backbone and plain(x).shape == (4, 64)


@pytest.mark.parametrize("name,last,size", [("cifar_resnet20", "layer3", 32), ("resnet18", "layer4", 64)])
def test_last_stride_one_in_the_main_path_and_in_branch_copies(name, last, size):
    plain = dhm.create_model(name, num_classes=5, branches="none")
    model = dhm.create_model(name, num_classes=5, last_stride=1, features=True)
    x = torch.randn(2, 3, size, size)
    model.eval()

    def last_map(net):
        feats = {}
        handle = getattr(net, last).register_forward_hook(lambda m, i, o: feats.setdefault("x", o))
        net(x)
        handle.remove()
        return feats["x"].shape[-1]

    assert last_map(model.backbone) == 2 * last_map(plain.eval())
    for branch in model.branches.values():  # every replicated last stage keeps the resolution too
        stage = branch.stages[-1]
        strides = {m.stride for m in stage.modules() if isinstance(m, nn.Conv2d)}
        assert (2, 2) not in strides
    with pytest.raises(ValueError, match="last_stride must be 1 or 2"):
        dhm.create_model(name, last_stride=3)


def test_pretrained_state_dict_loads_by_name_and_reports_what_it_left(tmp_path, capsys):
    source = dhm.create_model("resnet18", num_classes=1000, branches="none")
    path = tmp_path / "resnet18.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}}, path)
    target = dhm.create_model("resnet18", num_classes=10, branches="none", neck="bnneck")
    report = load_pretrained(target, path)
    torch.testing.assert_close(target.layer3[1].conv2.weight, source.layer3[1].conv2.weight)
    assert "fc.weight" in report.unused and "fc.bn.weight" in report.missing
    assert "fc.weight" in report.line(path) and "tensors loaded" in report.line(path)
    cfg = load_config("smoke", ["model.name=resnet18", "model.widths=null", f"model.pretrained={path}", "loss.mode=ce"])
    model = build_model(cfg, 10, 3)
    torch.testing.assert_close(model.layer1[0].conv1.weight, source.layer1[0].conv1.weight)
    assert "model.pretrained:" in capsys.readouterr().out
    (tmp_path / "other.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot load"):
        load_pretrained(target, tmp_path / "other.pth")
    torch.save({"x.weight": torch.zeros(3)}, tmp_path / "foreign.pth")
    with pytest.raises(CheckpointError, match="no tensor .* matches"):
        load_pretrained(target, tmp_path / "foreign.pth")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_pretrained(target, tmp_path / "missing.pth")


def test_a_model_option_that_would_download_weights_is_refused():
    cfg = load_config(
        "smoke", ["model.name=timm:resnet18", "model.widths=null", "model.options={pretrained: true}", "loss.mode=ce"]
    )
    with pytest.raises(ConfigError, match="never downloads"):
        build_model(cfg, 10, 3)


def test_random_erasing_is_seeded_inside_the_image_and_filled_with_the_mean():
    preset = AUGMENTS.get("reid")
    images = torch.full((64, 3, 32, 16), 200, dtype=torch.uint8)
    params = draw_params(preset, 64, torch.Generator().manual_seed(0))
    again = draw_params(preset, 64, torch.Generator().manual_seed(0))
    assert all(torch.equal(a, b) for a, b in zip(params, again))
    fill = torch.tensor([1, 2, 3], dtype=torch.uint8)
    out = apply_batch(images, preset, *params, fill=fill)
    erased = (out == fill.view(1, 3, 1, 1)).all(1)  # pixels set to the fill value
    chosen = params[3][:, 0] > 0
    assert bool(erased.flatten(1).any(1)[chosen].all()) and not bool(erased.flatten(1).any(1)[~chosen].any())
    assert 0.2 < chosen.float().mean() < 0.8
    area = erased.flatten(1).float().mean(1)[chosen]
    assert float(area.max()) <= 0.45 and float(area.min()) > 0


def test_image_size_as_height_and_width():
    assert image_hw(64) == (64, 64) and image_hw([256, 128]) == (256, 128) and image_hw(None) is None
    with pytest.raises(DataError, match="height, width"):
        image_hw([1, 2, 3])
    cfg = load_config("smoke", ["data.name=digits", "data.image_size=[16,8]"]).data
    with pytest.raises(DataError, match="square"):
        dhm.data.build_dataset(cfg)


@pytest.mark.slow
@pytest.mark.parametrize("setup", ["market1501/resnet50", "dukemtmc/resnet50", "msmt17/resnet50"])
def test_bot_recipes_build_the_bot_model_and_name_their_methods(setup):
    from dhm.engine.optim import build_optimizer

    methods = {s: load_config(f"{setup}_{s}").loss.mode for s in ("ce", "dsl", "dhm")}
    assert methods == {"ce": "ce", "dsl": "dsl", "dhm": "dhm"}  # the task supervises as BoT; the name adds a method
    with pytest.raises(ConfigError, match="loss.mode=bot is now loss.mode=ce"):
        load_config(f"{setup}_bot")
    cfg = load_config(setup)
    assert cfg.data.image_size == [256, 128] and cfg.train.task == "retrieval" and cfg.loss.label_smoothing == 0.1
    if setup != "market1501/resnet50":
        return  # one ResNet-50 build is enough
    model = build_model(cfg, 751, 3)
    optimizer = build_optimizer(model, cfg.optim)
    assert isinstance(optimizer, torch.optim.Adam) and optimizer.defaults["weight_decay"] == 5e-4
    frozen = {id(p) for p in model.parameters() if not p.requires_grad}
    assert frozen and not frozen & {id(p) for g in optimizer.param_groups for p in g["params"]}
    model.eval()
    x = torch.randn(1, 3, 128, 64)
    with torch.no_grad():
        assert model(x).shape == (1, 2048)
        assert model.backbone.layer4(
            model.backbone.layer3(
                model.backbone.layer2(
                    model.backbone.layer1(
                        model.backbone.maxpool(model.backbone.relu(model.backbone.bn1(model.backbone.conv1(x))))
                    )
                )
            )
        ).shape[-2:] == (8, 4)  # 1/16, not 1/32
    assert all(has_neck(b.head) for b in model.branches.values())


def test_unknown_optimizer_is_a_config_error():
    from dhm.engine.optim import build_optimizer

    with pytest.raises(ConfigError, match="optim.name"):
        build_optimizer(nn.Linear(2, 2), load_config("smoke", ["optim.name=adamm"]).optim)


def _bot_center_loss(x, labels, centers):
    """michuanhaohao/reid-strong-baseline@3da7e6f layers/center_loss.py:29-56, in float64."""
    batch_size, num_classes = x.size(0), centers.size(0)
    distmat = (
        torch.pow(x, 2).sum(dim=1, keepdim=True).expand(batch_size, num_classes)
        + torch.pow(centers, 2).sum(dim=1, keepdim=True).expand(num_classes, batch_size).t()
    )
    distmat = torch.addmm(distmat, x, centers.t(), beta=1, alpha=-2)
    classes = torch.arange(num_classes).long()
    mask = labels.unsqueeze(1).expand(batch_size, num_classes).eq(classes.expand(batch_size, num_classes))
    dist = distmat * mask.double()
    return dist.clamp(min=1e-12, max=1e12).sum() / batch_size


def test_center_loss_is_bots_in_value_gradient_and_center_step():
    """BoT's center loss and its update (engine/trainer.py:80-91 of the same commit: loss = ... + w * center(feat),
    backward, the centers' gradients multiplied by 1/w, SGD lr 0.5), against dhm's term, in float64."""
    from dhm.losses import CenterLoss

    w = 5e-4
    term = CenterLoss(num_classes=5, dims=(4, 2), names=("main", "head1"), heads="main", weight=w, lr=0.5).double()
    feats = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 0, 1, 1, 2, 4])
    bot_centers = term.centers[0].detach().clone().requires_grad_()
    bot_feats = feats.detach().clone().requires_grad_()
    bot = w * _bot_center_loss(bot_feats, y, bot_centers)
    bot.backward()
    bot_centers.grad *= 1.0 / w
    with torch.no_grad():
        bot_centers -= 0.5 * bot_centers.grad
    out: dict = {}
    value = term([None, None], ["main", "head1"], y, out, {"features": [feats, torch.zeros(6, 2)]})
    torch.testing.assert_close(value.detach(), bot.detach(), rtol=1e-10, atol=1e-12)  # the weighted loss
    torch.testing.assert_close(out["center/main"], bot.detach() / w, rtol=1e-10, atol=1e-12)
    value.backward()
    torch.testing.assert_close(feats.grad, bot_feats.grad, rtol=1e-10, atol=1e-14)  # the weighted gradient
    term.own_optimizer().step()
    torch.testing.assert_close(term.centers[0].detach(), bot_centers.detach(), rtol=1e-10, atol=1e-12)


@pytest.mark.slow
def test_bot_with_center_loss_trains_its_centers_and_resumes_them(tmp_path):
    from dhm.engine import build_trainer

    pku = __import__("conftest").SHARED_DATA / "pku-reid-subset"
    if not pku.is_dir():
        pytest.skip(f"{pku} is not here")
    args = [
        f"data.root={pku}",
        "model.widths=[8,16,32]",
        "data.options.test_ids=8",
        "train.epochs=1",
        "train.limit_batches=2",
        "train.progress=false",
        "loss.mode=dsl",
        "loss.supervision.center_weight=5e-4",
        f"train.out_dir={tmp_path}",
    ]
    trainer = build_trainer(load_config("pku-reid", args))
    terms = [t for t in trainer.loss_fn.terms if type(t).__name__ == "CenterLoss"]
    assert len(terms) == 1 and [c.shape for c in terms[0].centers] == [(66, 32), (66, 64), (66, 32)]
    start = [c.detach().clone() for c in terms[0].centers]
    trainer.fit()
    assert all(not torch.equal(a, b.detach()) for a, b in zip(start, terms[0].centers))
    ckpt = torch.load(tmp_path / "last.pt", weights_only=True)
    torch.testing.assert_close(ckpt["loss"]["terms.2.centers.0"], terms[0].centers[0].detach())
    with pytest.raises(ConfigError, match="a center loss"):
        build_trainer(load_config("pku-reid", [*args, "train.cuda_graph=true", "train.out_dir=" + str(tmp_path / "g")]))


def test_pk_is_the_identity_sampler():
    from dhm.data.samplers import build_sampler

    labels = torch.arange(10).repeat_interleave(5)
    draws = [
        build_sampler(n, labels, instances=4).draw(2, 16, torch.Generator().manual_seed(0), 0)
        for n in ("pk", "identity")
    ]
    assert torch.equal(torch.as_tensor(draws[0]), torch.as_tensor(draws[1]))


def test_pretrained_weights_start_the_branch_stages_they_copy_and_dml_peers(tmp_path, capsys):
    """model.pretrained_branches=copy (the default): each replicated branch stage starts as the backbone stage it
    copies (the file's weights), a DML peer takes every tensor the backbone took from the file (its classifier, of
    other classes, stays its own); random keeps the branches as built; the switch without a file is refused."""
    source = dhm.create_model("cifar_resnet20", num_classes=100, widths=(8, 8, 16), branches="none")
    path = tmp_path / "pre.pth"
    torch.save(source.state_dict(), path)
    common = ["model.widths=[8,8,16]", f"model.pretrained={path}"]
    model = build_model(load_config("smoke", ["loss.mode=dhm", "model.branches=paper", *common]), 10, 3)
    out = capsys.readouterr().out
    # the paper's layout: head1 is a double-width copy of layer3 (kept), head2 copies layer2 and 2 blocks of layer3
    assert "head1.stages.0 kept as initialised (not the shapes of layer3)" in out
    assert "head2.stages.0 <- layer2 (36 tensors)" in out and "head2.stages.1 <- layer3" in out
    for stage, original in ((0, source.layer2), (1, source.layer3)):
        theirs = original.state_dict()
        for k, a in model.branches["head2"].stages[stage].state_dict().items():
            torch.testing.assert_close(a, theirs[k], msg=k)
    random_ = build_model(
        load_config("smoke", ["loss.mode=dhm", "model.branches=paper", *common, "model.pretrained_branches=random"]),
        10,
        3,
    )
    assert not torch.equal(random_.branches["head2"].stages[0][0].conv1.weight, source.layer3[0].conv1.weight)
    assert "the branches start as initialised" in capsys.readouterr().out
    peers = build_model(load_config("smoke", ["loss.mode=dml", *common]), 10, 3)
    peer = peers.branches["head1"].stages[0].net
    torch.testing.assert_close(peer.layer1[0].conv1.weight, source.layer1[0].conv1.weight)
    assert not torch.equal(peer.fc.weight, peers.backbone.fc.weight)  # not in the file: each peer its own
    with pytest.raises(ConfigError, match="model.pretrained, which is not set"):
        build_model(load_config("smoke", ["loss.mode=dhm", "model.pretrained_branches=random"]), 10, 3)


@pytest.mark.filterwarnings("ignore:torch.quantize_per_tensor:UserWarning")  # deprecated, still what files hold
def test_pretrained_refuses_integer_and_quantized_tensors_for_float_weights(tmp_path):
    target = dhm.create_model("cifar_resnet20", num_classes=10, branches="none", widths=(8, 8, 16))
    state = {k: v.clone() for k, v in target.state_dict().items()}
    state["conv1.weight"] = torch.ones_like(state["conv1.weight"], dtype=torch.int64)
    torch.save(state, tmp_path / "ints.pth")
    with pytest.raises(CheckpointError, match="holds conv1.weight as int64 where the model's is float32"):
        load_pretrained(target, tmp_path / "ints.pth")
    quant = {"conv1.weight": torch.quantize_per_tensor(torch.randn(8, 3, 3, 3), 0.1, 0, torch.qint8)}
    torch.save(quant, tmp_path / "quant.pth")
    with pytest.raises(CheckpointError, match="quantized tensors"):
        load_pretrained(target, tmp_path / "quant.pth")
