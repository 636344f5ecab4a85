"""What the command line tells a newcomer: the version, the help of a bare ``dhm``, every config key with its
type, default and meaning, a suggestion when a model glob matches nothing, and seeds given as a list."""

from __future__ import annotations

import dataclasses
import json

import pytest
from helpers import COMPARE_TINY

from dhm.cli import main
from dhm.compare import seed_list
from dhm.config import schema
from dhm.errors import ConfigError
from dhm.version import __version__


def test_version_and_bare_dhm(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0 and capsys.readouterr().out.strip() == f"dhm {__version__}"
    assert main([]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: dhm") and all(c in out for c in ("train", "predict", "compare", "config"))


def test_config_keys_lists_every_key_with_type_default_and_meaning(capsys):
    assert main(["config", "--keys"]) == 0
    lines = capsys.readouterr().out.splitlines()
    keys = {line.split()[0]: line for line in lines}
    for section in ("model", "loss", "data", "optim", "train"):
        cls = type(getattr(schema.Config(), section))
        for f in dataclasses.fields(cls):
            assert f"{section}.{f.name}" in keys
    assert keys["optim.lr"].split()[1:3] == ["float", "0.1"] and "global batch" in keys["optim.lr"]
    assert "cross-entropy" in keys["loss.label_smoothing"]
    assert keys["train.cuda_graph"].split()[1:3] == ["bool", "false"]
    from dhm.config.keys import describe_keys

    assert [r.key for r in describe_keys() if not r.comment] == []  # every key says what it means


def test_every_option_shows_help():
    import argparse

    from dhm.cli import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert {"train", "eval", "predict", "export", "bench", "compare", "models", "recipes", "config"} <= set(commands)
    for name, sub in commands.items():
        for action in sub._actions:
            assert action.help, f"dhm {name} {'/'.join(action.option_strings) or action.dest} has no help"
        text = " ".join(sub.format_help().split())  # help lines wrap
        if name == "bench":  # defaults are shown
            assert "(default: cifar_resnet32)" in text and "(default: 10)" in text


def test_models_glob_without_match_suggests(capsys):
    assert main(["models", "wrn"]) == 2
    assert "try '*wrn*'" in capsys.readouterr().err
    assert main(["models", "wrn*"]) == 0 and "wrn28_10" in capsys.readouterr().out


def test_compare_seeds_count_or_list(tmp_path):
    assert seed_list(3) == [0, 1, 2] and seed_list("2") == [0, 1] and seed_list("0,4,7") == [0, 4, 7]
    assert seed_list("5,") == [5]
    for bad in ("0", "a,b", "1,1", "-1,2"):
        with pytest.raises(ConfigError):
            seed_list(bad)
    from dhm.compare import run_compare

    overrides = COMPARE_TINY
    result = run_compare("smoke", "3,5", ["ce"], overrides, tmp_path, log=lambda s: None)
    assert result["seeds"] == [3, 5] and result["modes"]["ce"]["test_best"]["n"] == 2
    assert json.loads((tmp_path / "ce" / "seed5" / "summary.json").read_text())["config"]["train"]["seed"] == 5
