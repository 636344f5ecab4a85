"""The model zoo: exact parameter counts, registry behaviour, dtype and memory-format safety."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_cifar

import dhm

# docs/method.md section 2: (main, side branches, total); CIFAR at 100 classes, ImageNet at 1000.
PAPER_COUNTS = {
    "cifar_resnet32": (470_004, 1_677_640, 2_147_644),
    "cifar_resnet110": (1_733_812, 6_036_296, 7_770_108),
    "wrn16_8": (11_007_540, 36_867_016, 47_874_556),
    "wrn28_10": (36_536_884, 127_609_480, 164_146_364),
    "densenet40_12": (1_060_132, 2_689_232, 3_749_364),
    "densenet_bc_100_12": (800_032, 5_542_832, 6_342_864),
    "resnet18": (11_689_512, 41_794_000, 53_483_512),
    "resnet34": (21_797_672, 63_033_808, 84_831_480),
    "resnet50": (25_557_032, 74_965_968, 100_523_000),
    "resnet101": (44_549_160, 85_020_624, 129_569_784),
    "resnet152": (60_192_808, 91_723_728, 151_916_536),
}


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("name", sorted(PAPER_COUNTS))
def test_paper_parameter_counts_exact(name):
    with torch.device("meta"):  # shapes only: the 164M-parameter WRN builds in milliseconds
        model = dhm.create_model(name)
    main, branches, total = PAPER_COUNTS[name]
    assert (_count(model.backbone), _count(model.branches), _count(model)) == (main, branches, total)
    with torch.device("meta"):
        assert _count(dhm.create_model(name, branches="none")) == main


def test_every_registered_name_and_layout():
    expected = {
        "cifar_resnet20",
        "cifar_resnet32",
        "cifar_resnet56",
        "cifar_resnet110",
        "cifar_resnet1202",
        "wrn16_8",
        "wrn28_10",
        "densenet40_12",
        "densenet_bc_100_12",
        "resnet18",
        "resnet34",
        "resnet50",
        "resnet101",
        "resnet152",
    }
    assert expected <= set(dhm.list_models())
    assert dhm.list_models("wrn*") == ["wrn16_8", "wrn28_10"]
    # [ours] rule for depths without a released layout; the released rows win elsewhere.
    assert [s.depths for s in dhm.paper_branches("cifar_resnet20")] == [(3,), (3, 2)]
    assert [s.depths for s in dhm.paper_branches("cifar_resnet56")] == [(9,), (9, 5)]
    assert [s.depths for s in dhm.paper_branches("cifar_resnet110")] == [(18,), (9, 9)]
    assert [s.depths for s in dhm.paper_branches("cifar_resnet1202")] == [(200,), (100, 100)]


@pytest.mark.slow
def test_resnet1202_builds_with_its_layout():
    with torch.device("meta"):
        model = dhm.create_model("cifar_resnet1202")
    assert len(model.backbone.layer1) == 200
    assert [len(s) for s in model.branches["head1"].stages] == [200]
    assert [len(s) for s in model.branches["head2"].stages] == [100, 100]


def test_unknown_model_suggests_close_name():
    with pytest.raises(KeyError, match="did you mean cifar_resnet32"):
        dhm.create_model("cifar_resnet23")


def test_unknown_branches_value_is_refused():
    with pytest.raises(ValueError, match="'paper', 'none'"):
        dhm.create_model("cifar_resnet20", branches="papr")


def test_wrn_dropout_is_applied():
    model = dhm.create_model("wrn16_8", num_classes=10, branches="none", dropout=0.3)
    assert any(isinstance(m, torch.nn.Dropout) and m.p == 0.3 for m in model.modules())
    model.train()
    x = torch.randn(2, 3, 16, 16)
    assert not torch.equal(model(x), model(x))  # different dropout masks
    model.eval()
    assert torch.equal(model(x), model(x))


@pytest.mark.parametrize("name", ["cifar_resnet20", "wrn16_8", "densenet40_12", "resnet18"])
def test_float64_and_channels_last(name):
    size = 64 if name.startswith("resnet") else 32
    narrow = {"widen": 1} if name == "wrn16_8" else {}
    model = dhm.create_model(name, num_classes=7, **narrow).double().eval()
    x = torch.randn(2, 3, size, size, dtype=torch.float64)
    ref = model.forward_heads(x)
    assert all(o.dtype == torch.float64 and o.shape == (2, 7) for o in ref)
    model = model.to(memory_format=torch.channels_last)
    out = model.forward_heads(x.to(memory_format=torch.channels_last))
    for a, b in zip(ref, out):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


def test_imagenet_resnet_any_input_size():
    model = dhm.create_model("resnet18", num_classes=5).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 97, 131)).shape == (1, 5)


def test_tiny_helper_is_narrow():
    assert _count(tiny_cifar(branches="none")) < 50_000
