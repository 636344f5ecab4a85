"""Methods as contracts: what a user asks for is what trains. Every method against every bundled recipe resolves
to a layout the method accepts or is refused in one line; options live beside what reads them (a key the method
does not read is refused); ``dhm train``, ``dhm compare`` and the Python API resolve a method the same way; no
engine file names a method or reads a method's option."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import torch

import dhm
from dhm.cli import main
from dhm.compare import mode_overrides
from dhm.config import config_from_dict, dump_config, list_recipes, load_config, to_dict
from dhm.engine.build import build_loss
from dhm.errors import ConfigError
from dhm.methods import METHODS, layout_family, list_methods

SRC = Path(__file__).resolve().parents[1] / "src" / "dhm"


@pytest.mark.parametrize("recipe", list_recipes())
def test_every_method_on_every_recipe_resolves_to_its_layout_or_is_refused(recipe):
    refused = []
    for name in list_methods():
        method = METHODS.get(name)
        try:
            cfg = load_config(recipe, [f"loss.mode={name}"])
        except ConfigError as exc:
            assert "\n" not in str(exc) and f"loss.mode={name}" in str(exc)
            refused.append(name)
            continue
        family = layout_family(cfg.model.branches)
        if method.layout == "none":
            assert cfg.model.branches == "none", (recipe, name)
        else:
            assert family in method.accepts(), (recipe, name, cfg.model.branches)
        assert cfg.train.task in method.tasks
        if method.sampler:
            assert cfg.data.sampler == method.sampler
    task = load_config(recipe).train.task
    # what is refused is refused for the task: classification-only methods on re-ID, dhm-emb off re-ID
    for name in refused:
        assert task not in METHODS.get(name).tasks, (recipe, name)


def test_a_contradiction_is_one_line_naming_both_sides(capsys):
    cases = [
        (["demo", "loss.mode=dml", "model.branches=paper"], "loss.mode=dml trains on model.branches=peers:2"),
        (["demo", "loss.mode=ce", "model.branches=paper"], "loss.mode=ce trains the plain backbone"),
        (["smoke", "loss.mode=one", "model.branches=peers:3"], "an override sets model.branches=peers:3"),
        (["pku-reid", "loss.mode=cskd"], "the recipe sets train.task=retrieval"),
        (["smoke", "loss.mode=ce", "loss.temperature=3"], "loss.mode=ce does not read loss.temperature"),
        (["smoke", "loss.mode=dhm", "loss.options.hint_weight=0"], "is an option of loss.mode=byot, not of"),
        (["smoke", "loss.mode=dsn", "loss.options.aux_wieght=2"], "did you mean loss.options.aux_weight?"),
        (["smoke", "loss.mode=ce", "loss.preset=gentle"], "loss.mode=ce does not"),
        (["smoke", "data.sampler_options.instances=4"], "is an option of data.sampler=identity"),
        (["pku-reid", "data.sampler_options.instances=0"], "data.sampler_options.instances must be >= 1"),
        (["smoke", "data.options.test_ids=3"], "is an option of data.name=reid_folders, not of data.name=synthetic"),
    ]
    for argv, words in cases:
        capsys.readouterr()
        assert main(["config", *argv]) == 2, argv
        err = capsys.readouterr().err.strip()
        assert words in err and err.count("\n") == 0 and err.startswith("dhm: error:"), (argv, err)


def test_a_shared_key_the_method_reads_is_honoured_and_a_recipe_key_it_does_not_read_is_dropped():
    cfg = load_config("smoke", ["loss.mode=dhm", "loss.detach=false", "loss.t2=false", "loss.temperature=2"])
    (kl,) = [t for t in build_loss(cfg, ("main", "head1", "head2")).terms if type(t).__name__ == "PairKL"]
    assert (kl.detach, kl.t2, kl.temperature) == (False, False, 2.0)
    plain = load_config("demo", ["loss.mode=ce"])  # the demo recipe ramps mimicking up: not a setting of ce
    text = dump_config(plain)
    assert plain.loss.rampup_epochs == 0 and "branches: none" in text and plain.model.branches == "none"


def test_compare_and_train_resolve_a_method_the_same_way():
    demo = load_config("demo")
    for mode in ("ce", "dhm", "dml", "dhm-gentle", "cskd", "one"):
        assert load_config("demo", mode_overrides(mode, demo)) == load_config("demo", [f"loss.mode={mode}"])


@pytest.mark.parametrize("mode", ["dhm-gentle", "dml", "dks", "dsl", "dhm-rampup"])
def test_the_python_api_builds_any_methods_loss_by_name(mode):
    cfg = load_config("smoke", [f"loss.mode={mode}", "train.epochs=30"])
    model = dhm.create_model("cifar_resnet20", num_classes=10, widths=(8, 8, 16), branches=cfg.model.branches)
    names = model.head_names
    api = dhm.MimicLoss(mode=mode, head_names=names, epochs=30)
    engine = build_loss(cfg, names)
    assert [type(t).__name__ for t in api.terms] == [type(t).__name__ for t in engine.terms]
    out = model.train()(torch.randn(4, 3, 32, 32))
    y = torch.randint(0, 10, (4,))
    want = engine(out, y, progress=7.5)["loss"]
    torch.testing.assert_close(api(out, y, progress=7.5)["loss"], want)
    with pytest.raises(ValueError, match="does not read"):
        dhm.MimicLoss(mode="ce", temperature=3.0)


def test_a_saved_config_of_the_old_spelling_reads_as_what_it_trained():
    old = to_dict(load_config("pku-reid"))
    old["loss"].update(mode="bot-dhm", margin=0.25, center_weight=5e-4, center_lr=0.5, triplet_weight=1.0)
    old["loss"].update(embed_weight=1.0, hint_weight=0.03, self_weight=1.0, peer_update="joint")
    old["loss"].pop("options"), old["loss"].pop("supervision")
    cfg = config_from_dict(old)
    assert cfg.loss.mode == "dhm" and cfg.loss.supervision.margin == 0.25
    assert cfg.loss.supervision.center_weight == 5e-4
    ce = to_dict(load_config("smoke", ["loss.mode=ce"]))
    ce["model"]["branches"] = "paper"  # what a ce run saved before: no branch was built
    ce["loss"]["peer_update"] = "joint"
    assert config_from_dict(ce).model.branches == "none"


ENGINE_WORDS = re.compile(
    r"\b(dml|cskd|cs-kd|pskd|ps-kd|okddip|byot|dsn|dks|peer_update|partner_forward|hint_weight|aux_weight|"
    r"center_weight|self_alpha|loss\.options\.\w+|loss\.mode=\w+)\b",
    re.IGNORECASE,
)


def test_no_engine_file_names_a_method_or_reads_a_methods_option():
    found = []
    for path in sorted((SRC / "engine").glob("*.py")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if ENGINE_WORDS.search(line):
                found.append(f"{path.name}:{number}: {line.strip()}")
    assert not found, "\n".join(found)


@pytest.mark.parametrize(
    ("recipe", "overrides"),
    [
        ("pku-reid", ["loss.mode=dhm-emb", "data.options.test_ids=8", "loss.supervision.center_weight=0.0005"]),
        ("market1501/resnet50", []),
        ("smoke", ["loss.mode=dsn", "loss.options.aux_weight=[0.3,0.7]"]),
        ("demo", ["loss.mode=ce"]),
        ("cifar100/wrn28_10", ["loss.mode=dml", "loss.options.peer_update=alternating"]),
        ("demo", ["loss.mode=dhm-gentle"]),
        ("smoke", ["loss.mode=dhm-rampup", "loss.rampup_epochs=4", "train.epochs=8"]),  # a sweep of a variant
    ],
)
def test_a_run_reruns_from_its_own_config_yaml(recipe, overrides, tmp_path):
    """config.yaml holds every setting that trains (data.image_size and every option included): read back as a
    recipe it resolves to the same config."""
    cfg = load_config(recipe, overrides)
    path = tmp_path / "config.yaml"
    path.write_text(dump_config(cfg))
    again = load_config(str(path))
    assert dataclasses.replace(again, loss=dataclasses.replace(again.loss, mode=cfg.loss.mode)) == cfg
    assert again.loss.mode in (cfg.loss.mode, METHODS.get(cfg.loss.mode).base)  # a tuned variant: its base
