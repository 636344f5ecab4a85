"""benchmarks/gpu.sh, the one prepared GPU run, in its tiny CPU mode: every phase runs the code path of the device
run and writes its report; a second invocation skips what is done (the resume a device run relies on)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from conftest import SHARED_DATA

ROOT = Path(__file__).resolve().parents[1]
TARBALL = SHARED_DATA / "cifar10-jpeg" / "CIFAR-10-images-jpeg.tar.gz"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not TARBALL.is_file(), reason=f"needs the CIFAR-10 JPEG tarball at {TARBALL}"),
]


def _run(out: Path, work: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "GPU_WORK": str(work), "GPU_BUDGET_S": "400"}
    return subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu.sh"), str(out), str(TARBALL), "--tiny"],
        capture_output=True,
        text=True,
        env=env,
        timeout=400,
        check=False,
    )


def test_gpu_script_tiny_mode_reports_and_resumes(tmp_path):
    first = _run(tmp_path / "out", tmp_path / "work")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "FAILED" not in first.stdout, first.stdout[-3000:]
    report = (tmp_path / "out" / "GPU.md").read_text()
    for section in (
        "## Training steps",
        "## Inference",
        "## Training pipeline",
        "## Runs side by side",
        "## Accuracy: 1 epochs",
        "## Re-ID training steps",
    ):
        assert section in report
    raw = json.loads((tmp_path / "out" / "gpu.json").read_text())
    assert {r["model"] for r in raw["speed"]} == {"cifar_resnet20"}
    assert {"ce", "ls", "dsl", "dhm", "dhm-rampup", "dhm-gentle"} == set(raw["accuracy"]["modes"])
    assert not raw["accuracy"]["unfinished"] and len(raw["pipeline"]) == 2
    # the probe ran its level side by side (a branched and a plain run) and the plan took its figures
    level = raw["probe"]["levels"]["2"]
    assert sorted(r["mode"] for r in level["runs"]) == ["ce", "dhm"] and level["branched_epochs_per_s"] > 0
    assert raw["plan"]["seeds"] == [0] and raw["plan"]["note"].startswith("probe: 2 runs side by side")
    assert [r["method"] for r in raw["reid_speed"]["rows"]] == ["ce", "dhm"]
    assert (tmp_path / "out" / "compare.png").is_file() and (tmp_path / "out" / "logs.tgz").is_file()
    ls = json.loads((tmp_path / "work" / "accuracy" / "ls" / "seed0" / "summary.json").read_text())
    # the run names its method (ls: the plain model, label smoothing 0.1)
    assert ls["config"]["loss"]["label_smoothing"] == 0.1 and ls["config"]["loss"]["mode"] == "ls"

    second = _run(tmp_path / "out2", tmp_path / "work")
    # gpu-tests, speed, engine-eager, conventional, probe, speed-compiled, reid-speed
    assert second.returncode == 0 and second.stdout.count("done before, skipped") == 7, second.stdout[-3000:]
    assert "done, skipped" in (tmp_path / "work" / "logs" / "accuracy.log").read_text()
