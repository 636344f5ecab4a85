"""Recipes and overrides: every recipe resolves, _base_ merges, unknown keys and wrong types fail clearly."""

from __future__ import annotations

import pytest

from dhm.config import config_from_dict, dump_config, list_recipes, load_config, to_dict
from dhm.errors import ConfigError


def test_every_bundled_recipe_loads():
    names = list_recipes()
    assert {"demo", "smoke", "mnist", "cifar10-jpeg"} <= set(names)
    setups = [f"cifar100/{a}" for a in ("resnet32", "resnet110", "wrn28_10", "densenet_bc_100_12")]
    setups += [f"imagenet/resnet{depth}" for depth in (18, 50, 101, 152)]
    assert set(setups) <= set(names)
    for setup in setups:  # one recipe per setup, the method a key; the old per-method names keep working
        assert load_config(setup).loss.mode == "dhm"
        for mode in ("ce", "dsl", "dhm", "ls", "dhm-rampup"):
            cfg = load_config(f"{setup}_{mode}")
            assert cfg.loss.mode == mode and cfg.name == f"{setup}_{mode}"
            assert to_dict(cfg) == to_dict(load_config(setup, [f"loss.mode={mode}", f"name={setup}_{mode}"]))
    for name in names:
        cfg = load_config(name)
        assert cfg.name == name


def test_base_merge_and_paper_settings():
    cfg = load_config("cifar100/wrn28_10_dhm")
    assert cfg.data.name == "cifar100" and cfg.data.batch_size == 128  # from _base_
    assert (cfg.model.dropout, cfg.optim.weight_decay, cfg.optim.milestones, cfg.optim.gamma, cfg.train.epochs) == (
        0.3,
        5e-4,
        [60, 120, 160],
        0.2,
        200,
    )
    assert load_config("cifar100/densenet_bc_100_12_ce").data.batch_size == 64
    assert load_config("cifar100/resnet110_dsl").loss.mode == "dsl"
    imagenet = load_config("imagenet/resnet50_dhm")
    assert (imagenet.optim.milestones, imagenet.data.batch_size, imagenet.train.epochs) == ([30, 60], 256, 90)


def test_overrides_are_typed():
    cfg = load_config(
        "demo",
        [
            "optim.lr=0.05",
            "optim.milestones=[3,6]",
            "train.epochs=3",
            "loss.dynamic=official",
            "model.num_classes=null",
            "train.amp=bf16",
        ],
    )
    assert (cfg.optim.lr, cfg.optim.milestones, cfg.train.epochs, cfg.loss.dynamic) == (0.05, [3.0, 6.0], 3, "official")
    assert load_config("demo", ["optim.lr=1"]).optim.lr == 1.0 and isinstance(
        load_config("demo", ["optim.lr=1"]).optim.lr, float
    )


@pytest.mark.parametrize(
    "override,message",
    [
        ("optim.lr_rate=0.1", "did you mean optim.lr?"),
        ("optm.lr=0.1", "did you mean optim"),
        ("train.epochs=2.5", "train.epochs expects int"),
        ("optim.lr=fast", "optim.lr expects float"),
        ("train.compile=3", "train.compile expects bool"),
        ("epochs", "not key=value"),
    ],
)
def test_bad_overrides_fail_with_suggestions(override, message):
    with pytest.raises(ConfigError, match=message.replace("?", r"\?")):
        load_config("demo", [override])


def test_unknown_recipe_suggests():
    with pytest.raises(ConfigError, match="did you mean demo"):
        load_config("dem")


def test_recipe_file_with_unknown_key(tmp_path):
    (tmp_path / "base.yaml").write_text("optim:\n  lr: 0.2\n")
    (tmp_path / "r.yaml").write_text("_base_: base.yaml\ntrain:\n  epochs: 3\n  epoch: 4\n")
    with pytest.raises(ConfigError, match="train.epoch; did you mean train.epochs"):
        load_config(tmp_path / "r.yaml")
    (tmp_path / "r.yaml").write_text("_base_: base.yaml\ntrain:\n  epochs: 3\n")
    cfg = load_config(tmp_path / "r.yaml")
    assert (cfg.name, cfg.optim.lr, cfg.train.epochs) == ("r", 0.2, 3)


def test_dump_round_trip():
    import yaml

    cfg = load_config("cifar100/wrn28_10_dhm", ["train.epochs=7"])
    assert config_from_dict(yaml.safe_load(dump_config(cfg))) == cfg
    assert to_dict(cfg)["train"]["epochs"] == 7


def test_loss_preset_scales_with_the_run_and_refuses_contradictions():
    cfg = load_config("cifar10-jpeg", ["loss.preset=gentle", "train.epochs=30"])
    assert (cfg.loss.alpha, cfg.loss.rampup, cfg.loss.rampup_epochs) == (0.5, "sigmoid", 15)
    assert load_config("demo", ["loss.preset=gentle", "train.epochs=10"]).loss.rampup_epochs == 5  # replaces demo's
    assert config_from_dict(to_dict(cfg)) == cfg  # saved configs resolve to themselves
    assert load_config("smoke", ["loss.preset=gentle", "loss.alpha=0.5"]).loss.alpha == 0.5  # agreeing is fine
    with pytest.raises(ConfigError, match="drop one"):
        load_config("smoke", ["loss.preset=gentle", "loss.alpha=1.0"])
    with pytest.raises(ConfigError, match="did you mean gentle"):
        load_config("smoke", ["loss.preset=gentl"])
