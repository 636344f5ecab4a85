"""Running the real ``dhm`` command: in a subprocess where the process is the point (signals, exit of a whole
interpreter, torchrun), otherwise in this process through ``dhm.cli.main`` (no interpreter start-up)."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path

# One-epoch runs of 96 images: what the comparison tests train per mode and seed.
COMPARE_TINY = [
    "train.progress=false",
    "data.options.train_size=128",
    "data.options.test_size=64",
    "data.val_size=32",
    "data.batch_size=32",
    "train.epochs=1",
]
SMOKE = [
    "train.progress=false",
    "train.epochs=2",
    "data.options.train_size=256",
    "data.options.test_size=128",
    "data.val_size=64",
    "data.batch_size=32",
]


def dhm(*args: str, cwd: Path | None = None, timeout: float = 300, torchrun: int = 0) -> subprocess.CompletedProcess:
    """``python -m dhm ARGS`` (or under ``torchrun --nproc_per_node=N``), output captured as text."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    if torchrun:
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={torchrun}",
            "-m",
            "dhm",
            *args,
        ]
    else:
        cmd = [sys.executable, "-m", "dhm", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)


def dhm_here(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``dhm ARGS`` through ``dhm.cli.main`` in this process: exit code, stdout and stderr as :func:`dhm` gives them."""
    from dhm.cli import main

    out, err, before = io.StringIO(), io.StringIO(), Path.cwd()
    try:
        if cwd is not None:
            os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(args))
            except SystemExit as exc:  # argparse's own exits (--help, usage errors)
                code = exc.code if isinstance(exc.code, int) else 1
    finally:
        os.chdir(before)
    return subprocess.CompletedProcess(["dhm", *args], code, out.getvalue(), err.getvalue())


# A one-epoch smoke run of 48 training images: the existing run directory of the bad-input and run-directory tests.
TINY_RUN = [
    "train.progress=false",
    "train.epochs=1",
    "data.options.train_size=64",
    "data.options.test_size=32",
    "data.val_size=16",
    "data.batch_size=16",
]
