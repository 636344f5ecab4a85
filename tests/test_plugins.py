"""Plugins: a method written as one file outside dhm (here DLB: the built-in file with another name) reaches
``dhm train`` and the children of ``dhm compare --jobs 2`` through ``DHM_PLUGINS``, and an installed package's
``dhm.plugins`` entry point reaches ``dhm methods``; a plugin that cannot be imported is one line, exit 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "dhm"
TINY = [
    "data.options.train_size=256",
    "data.options.test_size=64",
    "data.val_size=32",
    "data.batch_size=32",
    "train.epochs=2",
    "train.limit_batches=3",
    "train.progress=false",
    "train.threads=1",
]


def _plugin(folder: Path, name: str) -> Path:
    """The built-in DLB file as a user's plugin file, registering everything under ``name``."""
    text = (SRC / "builtins" / "dlb.py").read_text()
    assert 'NAME = "dlb"' in text
    path = folder / f"{name.replace('-', '_')}.py"
    path.write_text(text.replace('NAME = "dlb"', f'NAME = "{name}"'))
    return path


def _dhm(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    full = {**os.environ, "OMP_NUM_THREADS": "1", **env}
    return subprocess.run(
        [sys.executable, "-m", "dhm", *args], capture_output=True, text=True, env=full, cwd=cwd, check=False
    )


@pytest.mark.slow
def test_a_method_in_one_plugin_file_trains_through_compare_jobs(tmp_path):
    plugin = _plugin(tmp_path, "dlb-mine")
    out = tmp_path / "cmp"
    done = _dhm(
        ["compare", "smoke", "--modes", "dlb-mine", "--seeds", "2", "--jobs", "2", "--out", str(out), *TINY],
        {"DHM_PLUGINS": str(plugin)},
        tmp_path,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for seed in (0, 1):
        summary = json.loads((out / "dlb-mine" / f"seed{seed}" / "summary.json").read_text())
        assert summary["config"]["loss"]["mode"] == "dlb-mine"
        assert summary["config"]["data"]["sampler"] == "dlb-mine-pairs"
        records = [json.loads(x) for x in (out / "dlb-mine" / f"seed{seed}" / "metrics.jsonl").read_text().splitlines()]
        assert "train/dlb" in records[-1]  # the plugin's own term ran in the child process
    without = _dhm(["train", "smoke", "loss.mode=dlb-mine", *TINY], {"DHM_PLUGINS": ""}, tmp_path)
    assert without.returncode == 2 and "unknown method 'dlb-mine'" in without.stderr


def test_an_entry_point_plugin_is_loaded_and_a_broken_one_is_one_line(tmp_path):
    (tmp_path / "toy_plugin.py").write_text(
        "import dhm\n"
        "dhm.METHODS.register('toy-entry')(dhm.Method(layout='none', supervise='main', doc='from an entry point'))\n"
    )
    info = tmp_path / "toy_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[dhm.plugins]\ntoy = toy_plugin\n")
    env = {"PYTHONPATH": str(tmp_path), "DHM_PLUGINS": ""}
    done = _dhm(["methods"], env, tmp_path)
    assert done.returncode == 0 and "toy-entry" in done.stdout and "from an entry point" in done.stdout
    broken = _dhm(["methods"], {**env, "DHM_PLUGINS": "no_such_plugin_module"}, tmp_path)
    assert broken.returncode == 2
    assert broken.stderr.strip().count("\n") == 0 and "DHM_PLUGINS=no_such_plugin_module" in broken.stderr
