"""Fault injection: a deterministic run is SIGKILLed at 20 seeded points (inside training steps, in the middle of
checkpoint writes, between a temporary file and its rename, during the final evaluation, while writing metrics,
the deploy file and the summary), then resumed with ``train.resume=auto``; every time, the run's final files must
equal those of an uninterrupted run. Each attempt runs in a forked child (torch already imported: fast) that kills
itself at the chosen event; the children draw no plots (PNGs are not compared)."""

from __future__ import annotations

import json
import os
import random
import signal
from pathlib import Path

import pytest
import torch

ARGS = [
    "train",
    "smoke",
    "train.progress=false",
    "train.epochs=3",
    "train.deterministic=true",
    "train.threads=1",
    "data.options.train_size=96",
    "data.options.test_size=32",
    "data.val_size=0.3333333333",  # 32 of the 96 images (a fraction: a count may take at most a quarter)
    "data.batch_size=16",
]
TIMING = {"time_s", "images_per_s", "wall_time", "wall_time_s"}


def _kill_at(kind: str, n: int) -> None:
    """Patch the event ``kind`` so that its ``n``-th occurrence SIGKILLs this process."""
    from dhm import files as checkpoint  # the checkpoint file format: atomic writes (os.replace) and torch.save
    from dhm import steps as step
    from dhm.engine import finish, recorder, trainer

    count = [0]

    def hit() -> None:
        count[0] += 1
        if count[0] == n:
            os.kill(os.getpid(), signal.SIGKILL)

    def wrap(owner, name):
        original = getattr(owner, name)

        def patched(*args, **kwargs):
            hit()
            return original(*args, **kwargs)

        setattr(owner, name, patched)

    if kind == "step":
        wrap(step.EagerStep, "__call__")
    elif kind == "eval":  # validation (trainer) and the final tests (finish)
        wrap(trainer, "evaluate")
        wrap(finish, "evaluate")
    elif kind == "metrics":
        wrap(recorder, "_write_text")
    elif kind == "rename":  # the checkpoint's temporary file is complete, the rename has not happened
        wrap(checkpoint.os, "replace")
    elif kind == "torn-write":  # half of a checkpoint's bytes are on disk
        original = torch.save

        def torn(obj, f, *args, **kwargs):
            import io

            buffer = io.BytesIO()
            original(obj, buffer, *args, **kwargs)
            data = buffer.getvalue()
            f.write(data[: len(data) // 2])
            f.flush()
            hit()
            f.write(data[len(data) // 2 :])

        checkpoint.torch.save = torn
    elif kind == "summary":
        wrap(Path, "replace")


def _child(argv: list[str], kill: tuple[str, int] | None) -> int:
    pid = os.fork()
    if pid == 0:  # the child: run dhm, maybe kill itself on the way
        code = 1
        try:
            from dhm.engine import finish

            finish.plot_history = lambda *args, **kwargs: []  # PNGs are not among the compared files: 40% of a run
            if kill is not None:
                _kill_at(*kill)
            from dhm.cli import main

            code = main(argv)
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def _final(folder: Path) -> dict:
    """The run's final files, timing fields removed."""

    def clean(value):
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items() if k not in TIMING and k != "run_dir"}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    summary = json.loads((folder / "summary.json").read_text())
    for key in ("out_dir", "resume"):  # where the run went and how it was started differ by design
        summary["config"]["train"].pop(key)
    out = {"summary": clean(summary)}
    out["metrics"] = [clean(json.loads(line)) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    out["metrics.csv.rows"] = len((folder / "metrics.csv").read_text().splitlines())
    for name in ("last.pt", "best.pt", "deploy.pt"):
        ckpt = torch.load(folder / name, weights_only=True)
        out[name] = {
            "weights": ckpt.get("model") if name != "deploy.pt" else ckpt["state_dict"],
            "optimizer": ckpt.get("optimizer"),
            "state": clean(ckpt.get("state")),
        }
    out["leftovers"] = sorted(p.name for p in folder.glob(".*.tmp"))
    return out


def _equal(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    return a == b


# How often each event happens in one run of ARGS (12 steps; last.pt and best.pt per epoch plus deploy.pt; every
# os.replace: checkpoints and metrics files; 3 validations and the test; 2 metrics files per epoch; the summary).
EVENTS = {"step": 12, "torn-write": 7, "rename": 14, "eval": 4, "metrics": 6, "summary": 1}


@pytest.mark.slow
def test_sigkill_at_20_points_then_resume_gives_the_uninterrupted_run(tmp_path):
    reference = tmp_path / "reference"
    assert _child([*ARGS, f"train.out_dir={reference}"], None) == 0
    want = _final(reference)
    rng = random.Random(20)
    points = [(kind, n) for kind, count in EVENTS.items() for n in range(1, count + 1)]
    chosen = sorted(rng.sample(points, 20 - len(EVENTS))) + [(kind, rng.randint(1, c)) for kind, c in EVENTS.items()]
    survived = []
    for i, point in enumerate(chosen):
        folder = tmp_path / f"run{i}"
        assert _child([*ARGS, f"train.out_dir={folder}"], point) == -signal.SIGKILL, point
        assert _child([*ARGS, f"train.out_dir={folder}", "train.resume=auto"], None) == 0, point
        if _equal(_final(folder), want):
            survived.append(point)
    assert len(chosen) == 20 and survived == chosen, sorted(set(chosen) - set(survived))


@pytest.mark.slow
@pytest.mark.skipif(
    not (Path(__file__).resolve().parents[2] / "shared" / "data" / "pku-reid-subset").is_dir()
    and "DHM_SHARED_DATA" not in os.environ,
    reason="the PKU re-ID subset is not here",
)
def test_a_reid_run_killed_and_resumed_equals_the_uninterrupted_one(tmp_path):
    from conftest import SHARED_DATA

    args = [
        "train",
        "pku-reid",
        f"data.root={SHARED_DATA / 'pku-reid-subset'}",
        "model.widths=[8,16,32]",
        "data.options.test_ids=8",
        "train.epochs=3",
        "train.limit_batches=3",
        "train.deterministic=true",
        "train.threads=1",
        "train.progress=false",
        "loss.mode=dhm-emb",  # every re-ID term: identity CE, triplet, logit and embedding mimicking,
        "loss.supervision.center_weight=5e-4",  # and the center loss with its own parameters and update
    ]
    reference = tmp_path / "reference"
    assert _child([*args, f"train.out_dir={reference}"], None) == 0
    want = _final(reference)
    for i, point in enumerate([("step", 5), ("eval", 2), ("torn-write", 3)]):  # mid-epoch, validation, a checkpoint
        folder = tmp_path / f"run{i}"
        assert _child([*args, f"train.out_dir={folder}"], point) == -signal.SIGKILL, point
        assert _child([*args, f"train.out_dir={folder}", "train.resume=auto"], None) == 0, point
        assert _equal(_final(folder), want), point
