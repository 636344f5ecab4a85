"""Run directories that cannot be lost or mixed: which directory a run writes to, an exclusive lock per directory,
refusing another run's files unless resuming (or ``train.overwrite=true``), and tidying up after a crash.

A run holds ``<run_dir>/.lock`` with ``fcntl.flock`` for its whole life; the kernel drops the lock when the process
dies, however it dies, so a dead run's lock is simply taken over. The file names its holder (pid, host, start).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import yaml

from ..errors import ConfigError

#: The files a run writes; a directory holding any of the first four holds a run.
RUN_FILES = ("last.pt", "best.pt", "deploy.pt", "summary.json", "metrics.jsonl", "metrics.csv", "config.yaml")
CHECKPOINTS = RUN_FILES[:4]
LOCK = ".lock"
#: Everything else dhm may put in a run directory: plots, the compare log, TensorBoard, exports of its checkpoints.
OWN_NAMES = frozenset(
    (*RUN_FILES, LOCK, "loss.png", "lr.png", "accuracy.png", "retrieval.png", "train.log", "tensorboard")
)
EXPORT_STEMS = ("last", "best", "deploy")
EXPORT_SUFFIXES = (".safetensors", ".pt", ".ts", ".onnx", ".onnx.data")


class RunDirError(ConfigError):
    """The run directory cannot be used (in use, another run's, not a writable folder)."""


def holds_run(directory: Path) -> bool:
    """Whether ``directory`` holds a run's checkpoints or summary."""
    return any((directory / name).is_file() for name in CHECKPOINTS)


def is_locked(directory: Path) -> bool:
    """Whether a live process holds ``directory``'s lock."""
    path = directory / LOCK
    if not path.is_file():
        return False
    try:
        with open(path) as f:
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
            fcntl.flock(f, fcntl.LOCK_UN)
        return False
    except BlockingIOError:
        return True
    except OSError:
        return False


class RunLock:
    """The exclusive lock of one run directory (``with RunLock(dir):``); a second writer gets a RunDirError naming
    the holder."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.file: IO[str] | None = None

    def acquire(self) -> RunLock:
        make_dir(self.directory)
        f = open(self.directory / LOCK, "a+")  # noqa: SIM115 - held open for the run's life
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            f.close()
            raise RunDirError(
                f"run directory {self.directory} is in use by {holder}; wait for it, or choose another train.out_dir"
            ) from None
        f.seek(0)
        f.truncate()
        started = datetime.now().isoformat(timespec="seconds")
        f.write(f"pid {os.getpid()} on {socket.gethostname()} since {started}\n")
        f.flush()
        self.file = f
        return self

    def release(self) -> None:
        if self.file is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self.file, fcntl.LOCK_UN)
            self.file.close()
            self.file = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def make_dir(directory: Path) -> None:
    """Create ``directory`` (and parents) or say in one line why it cannot be."""
    if directory.exists() and not directory.is_dir():
        raise RunDirError(f"train.out_dir {directory} is a file, not a folder")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise RunDirError(f"cannot write to run directory {directory}: {exc.strerror or exc}") from None


def is_own(name: str) -> bool:
    """Whether dhm writes files of this name into a run directory (temporary files of those included)."""
    if name in OWN_NAMES or name == ".write-test":
        return True
    if any(name == stem + suffix for stem in EXPORT_STEMS for suffix in EXPORT_SUFFIXES):
        return True
    return own_temporary(name)


def own_temporary(name: str) -> bool:
    """Whether ``name`` is a temporary file dhm writes next to one of its files (``.<file>.tmp``, ``.<file>.*.tmp``)."""
    if not (name.startswith(".") and name.endswith(".tmp")):
        return False
    inner = name[1:-4]
    return any(inner == own or inner.startswith(own + ".") for own in OWN_NAMES)


def foreign_files(directory: Path) -> list[str]:
    """Names in ``directory`` that dhm did not write (sorted). Before its first checkpoint a run has written only
    its lock, its log, TensorBoard's folder and its ``config.yaml``, so without a checkpoint any other name of
    dhm's (metrics, plots) and a ``config.yaml`` that is not a dhm config are a user's."""
    try:
        names = [p.name for p in directory.iterdir()]
    except OSError:
        return []
    if holds_run(directory):
        return sorted(n for n in names if not is_own(n))
    early = {LOCK, ".write-test", "train.log", "tensorboard"}
    return sorted(
        n
        for n in names
        if n not in early and not own_temporary(n) and not (n == "config.yaml" and _is_dhm_config(directory / n))
    )


def _is_dhm_config(path: Path) -> bool:
    """Whether ``path`` is a config.yaml a dhm run wrote (a small YAML mapping with dhm's sections)."""
    try:
        if path.stat().st_size > 1 << 20:
            return False
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError, RecursionError):
        return False
    return isinstance(data, dict) and {"name", "model", "data", "train", "loss"} <= set(data)


def refuse_other_run(directory: Path, resuming: bool, overwrite: bool, locked: bool) -> None:
    """A new run never silently replaces another or a user's files: refuse a directory that holds a run unless it
    is being resumed, and one that holds files dhm did not write (a user's folder) unless ``train.overwrite=true``.
    With ``train.overwrite=true`` the old run's files are removed (never anything else), and only once this run
    holds the directory's lock (``locked``)."""
    if not directory.is_dir():
        return
    foreign = foreign_files(directory)
    if foreign and not overwrite and not resuming:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise RunDirError(
            f"train.out_dir {directory} holds files dhm did not write ({shown}); choose an empty or new folder, "
            "or write there anyway with train.overwrite=true"
        )
    if resuming or not holds_run(directory):
        return
    if not overwrite:
        raise RunDirError(
            f"train.out_dir {directory} already holds a run; continue it with train.resume=auto, or replace it "
            "with train.overwrite=true"
        )
    if not locked:
        return
    for name in RUN_FILES:
        with contextlib.suppress(FileNotFoundError):
            (directory / name).unlink()


def remove_leftovers(directory: Path) -> list[Path]:
    """Delete the temporary files a killed run left behind (``.<name>.*.tmp`` of dhm's own file names, never any
    other file); returns them."""
    leftovers = [p for p in directory.glob(".*.tmp") if p.is_file() and own_temporary(p.name)]
    for path in leftovers:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    return leftovers


def unfinished_runs(base: Path) -> list[Path]:
    """Run folders under ``base`` with a ``last.pt``, no ``summary.json`` and no live lock, newest first."""
    if not base.is_dir():
        return []
    runs = [
        d
        for d in base.iterdir()
        if d.is_dir() and (d / "last.pt").is_file() and not (d / "summary.json").exists() and not is_locked(d)
    ]
    return sorted(runs, key=lambda d: (d / "last.pt").stat().st_mtime, reverse=True)


def choose_run_dir(train: Any, name: str) -> Path:
    """Where a run writes: the folder of ``train.resume`` (a path), ``train.out_dir``, the newest unfinished and
    unlocked run of recipe ``name`` (``train.resume=auto``), or a new ``<runs_root>/<name>/<timestamp>``."""
    if train.resume not in ("", "auto"):
        return Path(train.resume).expanduser().parent
    if train.out_dir:
        return Path(train.out_dir).expanduser()
    base = Path(train.runs_root).expanduser() / name
    unfinished = unfinished_runs(base) if train.resume == "auto" else []  # never a run that is still training
    if unfinished:
        return unfinished[0]
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir, k = base / stamp, 1
    while run_dir.exists():
        run_dir, k = base / f"{stamp}-{k}", k + 1
    return run_dir
