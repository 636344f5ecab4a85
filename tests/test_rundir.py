"""Run directories: one writer at a time, never another run's files, leftovers tidied, SIGTERM like Ctrl-C,
and 16-bit images read at full range."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import TINY_RUN
from PIL import Image

from dhm.cli import main
from dhm.engine.rundir import RunLock, is_locked

TINY = TINY_RUN


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("runs") / "smoke" / "finished"
    assert main(["train", "smoke", *TINY, f"train.out_dir={folder}"]) == 0
    return folder


def test_a_second_writer_is_refused_naming_the_holder(finished, tmp_path, capsys):
    folder = tmp_path / "busy"
    with RunLock(folder):
        assert is_locked(folder)
        capsys.readouterr()
        assert main(["train", "smoke", *TINY, f"train.out_dir={folder}"]) == 2
        assert f"is in use by pid {os.getpid()}" in capsys.readouterr().err
    assert not is_locked(folder)  # released: a dead or finished holder's lock is simply taken over
    assert main(["train", "smoke", *TINY, f"train.out_dir={folder}"]) == 0


def test_resume_auto_never_picks_a_run_that_is_training(finished, tmp_path, capsys):
    root = tmp_path / "runs"
    unfinished = root / "smoke" / "unfinished"
    shutil.copytree(finished, unfinished)
    (unfinished / "summary.json").unlink()
    with RunLock(unfinished):
        capsys.readouterr()
        assert main(["train", "smoke", *TINY, f"train.runs_root={root}", "train.resume=auto"]) == 0
        assert "no unfinished run to resume" in capsys.readouterr().out
    assert not (unfinished / "summary.json").exists()  # untouched while it was locked
    assert main(["train", "smoke", *TINY, f"train.runs_root={root}", "train.resume=auto"]) == 0
    assert (unfinished / "summary.json").exists()  # now it is the one resumed


def test_overwrite_replaces_only_the_old_runs_files_and_leftovers_go(finished, tmp_path):
    folder = tmp_path / "run"
    shutil.copytree(finished, folder)
    (folder / "notes.txt").write_text("mine")
    (folder / ".last.pt.x1y2.tmp").write_bytes(b"half a checkpoint")
    before = (folder / "last.pt").stat().st_mtime_ns
    assert main(["train", "smoke", *TINY, "train.epochs=2", f"train.out_dir={folder}", "train.overwrite=true"]) == 0
    assert (folder / "last.pt").stat().st_mtime_ns != before
    assert (folder / "notes.txt").read_text() == "mine" and not list(folder.glob(".*.tmp"))


@pytest.mark.slow
def test_sigterm_stops_like_ctrl_c_with_exit_143(tmp_path):
    folder = tmp_path / "run"
    argv = [sys.executable, "-m", "dhm", "train", "smoke", "train.progress=false", "train.epochs=200"]
    proc = subprocess.Popen([*argv, f"train.out_dir={folder}"], stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 600  # generous: the suite may share the cores with other work
    while not (folder / "last.pt").exists() and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143
    assert err.strip().splitlines()[-1].startswith("dhm: terminated (SIGTERM)")
    assert (folder / "last.pt").exists() and not is_locked(folder)


def test_16_bit_png_keeps_its_range(tmp_path):
    from dhm.data.folder import load_image

    ramp = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    image = load_image(tmp_path / "deep.png")
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8
    assert image.min() == 0 and image.max() == 255 and len(np.unique(image[..., 0])) > 200
