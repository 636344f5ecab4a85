"""Branches: attach/strip, the forward contract, gradients, state_dict round trips, torchvision interop."""

from __future__ import annotations

import io

import pytest
import torch
from conftest import tiny_cifar

import dhm
from dhm.branches import Branch


def _grad_names(model, loss):
    model.zero_grad(set_to_none=True)
    loss.backward()
    return [n for n, p in model.named_parameters() if p.grad is None]


def test_train_mode_returns_every_head_main_first():
    model = tiny_cifar().train()
    out = model(torch.randn(4, 3, 32, 32))
    assert isinstance(out, tuple) and len(out) == 3 and model.head_names == ("main", "head1", "head2")
    assert all(o.shape == (4, 10) for o in out)


def test_eval_output_is_the_stripped_backbone_bit_for_bit():
    model = tiny_cifar()
    model.train()(torch.randn(8, 3, 32, 32))  # move BN statistics away from their init
    model.eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), dhm.strip(model)(x))
        assert torch.equal(model.forward_heads(x)[0], model(x))


def test_eval_does_not_run_branches(monkeypatch):
    model = tiny_cifar().eval()

    def boom(*args, **kwargs):
        raise AssertionError("a branch ran in eval mode")

    for branch in model.branches.values():
        monkeypatch.setattr(branch, "forward", boom)
    with torch.no_grad():
        model(torch.randn(2, 3, 32, 32))
        with pytest.raises(AssertionError, match="a branch ran"):
            model.forward_heads(torch.randn(2, 3, 32, 32))


def test_strip_returns_the_backbone_and_plain_models_unchanged():
    model = tiny_cifar()
    assert dhm.strip(model) is model.backbone
    plain = tiny_cifar(branches="none")
    assert dhm.strip(plain) is plain


@pytest.mark.parametrize("name", ["cifar_resnet20", "wrn16_8", "densenet40_12", "densenet_bc_100_12", "resnet18"])
def test_stripped_state_dict_loads_strictly_into_plain_model(name):
    narrow = {"widen": 1} if name.startswith("wrn") else {}
    model = dhm.create_model(name, num_classes=10, **narrow)
    plain = dhm.create_model(name, num_classes=10, branches="none", **narrow)
    plain.load_state_dict(dhm.strip(model).state_dict(), strict=True)
    assert list(plain.state_dict()) == list(dhm.strip(model).state_dict())


@pytest.mark.parametrize("mode", ["dsl", "dhm"])
@pytest.mark.parametrize("dynamic_fork", [False, True])
@pytest.mark.parametrize("name", ["cifar_resnet20", "wrn16_8", "densenet40_12", "resnet18"])
def test_every_parameter_gets_a_gradient(name, mode, dynamic_fork):
    narrow = {"widen": 1} if name.startswith("wrn") else {}
    model = dhm.create_model(name, num_classes=10, dynamic_fork=dynamic_fork, **narrow).train()
    size = 64 if name.startswith("resnet") else 32
    out = model(torch.randn(4, 3, size, size))
    loss = dhm.MimicLoss(mode=mode, dynamic="official" if dynamic_fork and mode == "dhm" else None)(
        out, torch.randint(0, 10, (4,))
    )
    assert _grad_names(model, loss["loss"]) == []


def test_state_dict_round_trip_through_bytes():
    model = tiny_cifar()
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    clone = tiny_cifar()
    clone.load_state_dict(torch.load(buffer, weights_only=True), strict=True)
    x = torch.randn(2, 3, 32, 32)
    model.eval(), clone.eval()
    with torch.no_grad():
        for a, b in zip(model.forward_heads(x), clone.forward_heads(x)):
            assert torch.equal(a, b)


def test_any_number_of_branches_and_light_branches_anywhere():
    backbone = tiny_cifar(branches="none")
    specs = [
        dhm.BranchSpec("layer2", (2,), 2.0),
        dhm.BranchSpec("layer1", (1, 1)),
        dhm.BranchSpec(0, builder="light"),
        dhm.BranchSpec("layer2", builder="light", width=0.5),
        {"fork": "layer3", "builder": "light"},  # after the last stage: only a light branch can fork there
    ]
    model = dhm.attach_branches(backbone, specs).train()
    out = model(torch.randn(2, 3, 32, 32))
    assert len(out) == 6 and all(o.shape == (2, 10) for o in out)
    assert _grad_names(model, dhm.MimicLoss()(out, torch.tensor([1, 2]))["loss"]) == []
    assert dict(backbone.named_parameters()).keys() == dict(dhm.strip(model).named_parameters()).keys()


def test_replicate_depths_default_to_the_backbone_and_bad_specs_fail():
    backbone = tiny_cifar(branches="none")
    model = dhm.attach_branches(backbone, [dhm.BranchSpec("layer1")])
    assert [len(s) for s in model.branches["head1"].stages] == [3, 3]
    with pytest.raises(ValueError, match="must replicate 2 stages"):
        dhm.attach_branches(backbone, [dhm.BranchSpec("layer1", (3,))])
    with pytest.raises(ValueError, match="cannot fork after the last stage"):
        dhm.attach_branches(backbone, [dhm.BranchSpec("layer3")])
    with pytest.raises(ValueError, match="unknown fork stage"):
        dhm.attach_branches(backbone, [dhm.BranchSpec("layer9")])
    with pytest.raises(ValueError, match="widths"):
        dhm.attach_branches(backbone, [dhm.BranchSpec("layer1", width=(1.0, 2.0, 3.0))])
    with pytest.raises(TypeError, match="does not know how to split"):
        dhm.attach_branches(torch.nn.Linear(3, 3), [dhm.BranchSpec(0)])


def test_stochastic_fork_offset_takes_over_main_blocks():
    model = tiny_cifar().train()
    branch: Branch = model.branches["head2"]  # forks after layer1, first replicated stage = layer2 at 1x
    assert branch.max_offset == 3 and model.branches["head1"].max_offset == 0  # head 1 is 2x wide: static
    model.eval()  # deterministic BN for the comparison
    x = model.backbone.forward_stem(torch.randn(2, 3, 32, 32))
    f0 = model.backbone.layer1(x)
    feats = [f0]
    for block in model.backbone.layer2:
        feats.append(block(feats[-1]))
    with torch.no_grad():
        for j in range(4):
            got = branch(f0, feats, torch.tensor(j))
            h = feats[j]
            for block in list(branch.stages[0])[j:]:
                h = block(h)
            expected = branch.head(branch.stages[1](h))
            torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_dynamic_fork_draws_vary_and_static_is_default():
    assert tiny_cifar().dynamic_fork is False
    model = tiny_cifar(dynamic_fork=True).train()
    x = torch.randn(2, 3, 32, 32)
    torch.manual_seed(1)
    heads = {tuple(model(x)[2].flatten().tolist()) for _ in range(12)}
    assert len(heads) > 1  # head 2 changes with the drawn fork point (BN in train mode is deterministic)


def test_torchvision_resnet_branches_and_strip(torchvision):
    for name in ("resnet18", "resnet50"):
        ours = dhm.create_model(name, num_classes=1000)
        reference = getattr(torchvision.models, name)()
        reference.load_state_dict(dhm.strip(ours).state_dict(), strict=True)
        reference.eval(), ours.eval()
        x = torch.randn(1, 3, 64, 64)
        with torch.no_grad():
            assert torch.equal(reference(x), ours(x))
    backbone = torchvision.models.resnet18(num_classes=10)
    model = dhm.attach_branches(backbone, dhm.paper_branches("resnet18")).train()
    out = model(torch.randn(2, 3, 64, 64))
    assert len(out) == 3 and dhm.strip(model) is backbone
    with torch.device("meta"):
        branched = dhm.attach_branches(torchvision.models.resnet50(), dhm.paper_branches("resnet50"))
    assert sum(p.numel() for p in branched.branches.parameters()) == 74_965_968


def test_own_staged_backbone_with_any_classifier_name():
    """A user's StagedBackbone whose classifier is not called ``fc`` takes the paper-style branches."""
    from torch import nn

    import dhm

    class Tiny(dhm.StagedBackbone):
        stage_names = ("s1", "s2")

        def __init__(self, classes: int = 7) -> None:
            super().__init__()
            self.stem = nn.Conv2d(3, 8, 3, padding=1)
            self.s1, _ = self.make_stage(0, 1, 1.0, 8)
            self.s2, _ = self.make_stage(1, 1, 1.0, 8)
            self.classifier = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(16, classes))

        def make_stage(self, index, blocks, width, in_channels):
            out = int(8 * (index + 1) * width)
            return nn.Sequential(
                *[nn.Conv2d(in_channels if b == 0 else out, out, 3, padding=1) for b in range(blocks)]
            ), out

        def stage_channels(self, index):
            return 8 * (index + 1)

        def forward_stem(self, x):
            return self.stem(x)

        def forward_head(self, x):
            return self.classifier(x)

    net = Tiny()
    assert net.num_classes == 7
    model = dhm.attach_branches(net, [dhm.BranchSpec(fork="s1", depths=(1,))]).train()
    outs = model(torch.randn(2, 3, 16, 16))
    assert [o.shape for o in outs] == [torch.Size([2, 7])] * 2
    assert dhm.strip(model) is net
