"""benchmarks/committed_runs.py: the finished runs of a long table kept in the repository and put back on a new
machine, so that ``dhm compare`` skips them and the tables read them again; and the digest that says two machines'
backbones are the same weights."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "committed_runs.py"


def _module():
    spec = importlib.util.spec_from_file_location("committed_runs", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(folder: Path, value: float, where: Path) -> None:
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text(json.dumps({"test_acc1": value, "run_dir": f"{where}/{folder.name}"}))
    (folder / "metrics.jsonl").write_text('{"epoch": 1}\n')


def test_runs_kept_then_restored_on_a_new_machine_are_the_same_runs(tmp_path, monkeypatch):
    runs = _module()
    monkeypatch.chdir(tmp_path)
    first = tmp_path / "runs"
    _run(first / "ce" / "seed0", 68.2, tmp_path)
    _run(first / "dml+data.batch_size=128" / "seed1", 61.4, tmp_path)
    (first / "dhm" / "seed0").mkdir(parents=True)  # unfinished: no summary, not kept
    kept = tmp_path / "kept"
    written = runs.keep(first, kept, metrics=True)
    assert sorted(p.name for p in written) == [
        "ce_seed0_metrics.jsonl",
        "ce_seed0_summary.json",
        "dml+data.batch_size=128_seed1_metrics.jsonl",
        "dml+data.batch_size=128_seed1_summary.json",
    ]
    assert str(tmp_path) not in (kept / "ce_seed0_summary.json").read_text()  # no machine's path committed

    fresh = tmp_path / "fresh"
    restored = runs.restore(fresh, kept, metrics=True)
    assert sorted(str(r.relative_to(fresh)) for r in restored) == ["ce/seed0", "dml+data.batch_size=128/seed1"]
    assert json.loads((fresh / "ce" / "seed0" / "summary.json").read_text())["test_acc1"] == 68.2
    assert (fresh / "ce" / "seed0" / "metrics.jsonl").read_text() == '{"epoch": 1}\n'
    # a run that finished here is never overwritten by its kept copy
    (fresh / "ce" / "seed0" / "summary.json").write_text('{"test_acc1": 1.0}')
    assert runs.restore(fresh, kept) == []
    assert json.loads((fresh / "ce" / "seed0" / "summary.json").read_text())["test_acc1"] == 1.0


def test_split_runs_round_trip_and_the_two_layouts_stay_apart(tmp_path, monkeypatch):
    runs = _module()
    monkeypatch.chdir(tmp_path)
    first = tmp_path / "runs"
    mode = "ce+loss.supervision.triplet_weight=0+model.neck=none"
    _run(first / "split3" / mode / "seed1", 30.5, tmp_path)
    _run(first / "split12" / "dhm" / "seed0", 31.0, tmp_path)
    kept = tmp_path / "kept"
    assert sorted(p.name for p in runs.keep(first, kept, splits=True)) == [
        "split12_dhm_seed0_summary.json",
        f"split3_{mode}_seed1_summary.json",
    ]
    assert runs.restore(tmp_path / "flat", kept) == []  # split files are not runs of a flat table
    fresh = tmp_path / "fresh"
    restored = runs.restore(fresh, kept, splits=True)
    assert sorted(str(r.relative_to(fresh)) for r in restored) == ["split12/dhm/seed0", f"split3/{mode}/seed1"]
    assert not (fresh / "split3" / mode / "seed1" / "metrics.jsonl").exists()  # asked for summaries only
    cli = subprocess.run([sys.executable, SCRIPT, "restore", tmp_path / "cli", kept, "--splits"], check=False)
    assert cli.returncode == 0
    assert (tmp_path / "cli" / "split12" / "dhm" / "seed0" / "summary.json").is_file()


def test_the_weights_digest_names_the_weights_not_the_file(tmp_path):
    spec = importlib.util.spec_from_file_location("weights_digest", SCRIPT.with_name("weights_digest.py"))
    digest = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(digest)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))  # a 0-dim buffer too
    torch.save({"state_dict": net.state_dict(), "meta": {"made": "here"}}, tmp_path / "a.pt")
    torch.save({"state_dict": net.state_dict(), "meta": {"made": "elsewhere, later"}}, tmp_path / "b.pt")
    assert digest.digest(str(tmp_path / "a.pt")) == digest.digest(str(tmp_path / "b.pt"))
    with torch.no_grad():
        net[1].running_mean[2] += 1e-6
    torch.save({"state_dict": net.state_dict()}, tmp_path / "c.pt")
    assert digest.digest(str(tmp_path / "c.pt")) != digest.digest(str(tmp_path / "a.pt"))
