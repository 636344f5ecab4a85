"""``train.threads=auto`` and ``data.workers=auto`` (dhm.cpus): a run on a shared machine takes the idle cores."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from dhm import cpus
from dhm.config import load_config
from dhm.errors import ConfigError


def test_given_counts_stand_and_zero_is_torchs_default():
    assert cpus.choose_threads(3) == cpus.ThreadChoice(3, "train.threads")
    assert cpus.choose_threads(0).threads == cpus.TORCH_DEFAULT_THREADS
    assert cpus.choose_workers(0) == 0 and cpus.choose_workers(7) == 7
    assert 1 <= cpus.choose_workers("auto") <= cpus.MAX_AUTO_WORKERS


def test_omp_num_threads_is_the_users_choice(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert cpus.choose_threads("auto") == cpus.ThreadChoice(cpus.TORCH_DEFAULT_THREADS, "OMP_NUM_THREADS")


@pytest.mark.parametrize(
    ("busy", "cores", "default", "expected"),
    [(1.0, 2, 2, 1), (0.1, 2, 2, 2), (1.9, 2, 2, 1), (0.0, 8, 4, 4), (5.4, 8, 8, 3)],
)
def test_auto_takes_the_idle_cores(monkeypatch, busy, cores, default, expected):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(cpus, "usable_cores", lambda: list(range(cores)))
    monkeypatch.setattr(cpus, "busy_cores", lambda c: busy)
    monkeypatch.setattr(cpus, "TORCH_DEFAULT_THREADS", default)
    choice = cpus.choose_threads("auto")
    assert choice.threads == expected and choice.why == f"auto: {busy:.1f} of {cores} cores busy"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads Linux's /proc/stat")
def test_busy_cores_sees_another_process_spinning():
    """A real process spinning on one core is measured as (at least most of) one busy core."""
    core = cpus.usable_cores()[0]
    spin = subprocess.Popen([sys.executable, "-c", f"import os; os.sched_setaffinity(0, {{{core}}})\nwhile True: pass"])
    try:
        import time

        time.sleep(0.3)
        busy = cpus.busy_cores([core], interval=0.5)
    finally:
        spin.kill()
        spin.wait()
    assert busy is not None and busy >= 0.8


def test_a_word_other_than_auto_is_refused():
    for key in ("train.threads", "data.workers"):
        with pytest.raises(ConfigError, match=f"{key} must be auto or a count >= 0, got 'many'"):
            load_config("smoke", [f"{key}=many"])
    assert load_config("smoke", ["train.threads=2"]).train.threads == 2
    assert load_config("smoke").train.threads == "auto" and torch.get_num_threads() >= 1
