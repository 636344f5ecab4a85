"""The Trainer (built parts -> a run directory: open or resume it, train the epochs, checkpoint each one, end the
run) and `train`, the entry point that owns the process group."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..branches import unwrap
from ..config import Config, dump_config, to_dict
from ..errors import CheckpointError, ConfigError
from ..version import __version__
from . import dist as D
from .checkpoint import (
    FORMAT,
    RESUME_NEEDS,
    check_compatible,
    load_file,
    load_state,
    pack_numpy_rng,
    save_atomic,
    unpack_numpy_rng,
)
from .compiling import records_cuda_graphs, resolve_compile, wrap_model
from .epoch import run_steps, train_one_epoch
from .evaluate import evaluate
from .finish import finish_run
from .parts import Parts, build_parts, steps_per_epoch
from .precision import resolve_amp
from .progress import LogProgress
from .recorder import Recorder
from .rundir import RunLock, choose_run_dir, refuse_other_run, remove_leftovers
from .step import EagerStep, GraphStep


@dataclass
class RunState:
    """What a checkpoint carries besides the weights and the optimizer."""

    epoch: int = 0  # epochs completed
    best_val: float = -1.0
    best_epoch: int = 0
    wall_time: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)


class Trainer:
    """Trains built parts into a run directory: checkpoints every epoch, resumes, writes the metrics files, and
    ends the run (:func:`~dhm.engine.finish.finish_run`). Rank 0 writes the run directory; every process trains.
    With only a config it builds the parts itself (:func:`~dhm.engine.parts.build_parts`). It never creates or
    destroys a process group: under torchrun the entry point does (:func:`dhm.engine.train`, the ``dhm`` command).

    Example:
        >>> summary = Trainer(load_config("demo")).fit()
        >>> summary["test_acc1"]
    """

    def __init__(self, cfg: Config, parts: Parts | None = None, dist: D.DistInfo | None = None) -> None:
        self.cfg = cfg
        self.config_dict = to_dict(cfg)
        if cfg.train.accum_steps < 1 or cfg.train.epochs < 1:
            raise ConfigError("train.accum_steps and train.epochs must be >= 1")
        if cfg.train.threads > 0:
            torch.set_num_threads(cfg.train.threads)
        self.dist = dist or D.info(cfg.train.device)
        self.amp = resolve_amp(cfg.train.amp, self.dist.device)
        self.compile_mode = resolve_compile(cfg.train.compile)
        if cfg.train.cuda_graph and records_cuda_graphs(self.compile_mode, self.dist.device):
            raise ConfigError("train.cuda_graph=true captures the step itself: use it with train.compile=true or false")
        if cfg.train.sync_bn and self.dist.device.type != "cuda":
            raise ConfigError("train.sync_bn=true needs CUDA devices (PyTorch's SyncBatchNorm has no CPU kernel)")
        self.parts = parts if parts is not None else build_parts(cfg, self.dist)
        self.model, self.loss_fn = self.parts.model, self.parts.loss_fn
        self.optimizer, self.scheduler = self.parts.optimizer, self.parts.scheduler
        self.head_names: tuple[str, ...] = self.parts.head_names
        self.steps_per_epoch = steps_per_epoch(self.parts.train, cfg.train.limit_batches)
        self.scaler = torch.amp.GradScaler(self.dist.device.type, enabled=self.amp == "fp16")
        if cfg.train.cuda_graph:
            GraphStep.check(self.dist.device, self.dist.distributed, cfg.train.accum_steps, self.amp, self.optimizer)
        self._step: EagerStep | None = None
        self._last_lr = cfg.optim.lr  # the learning rate of the latest optimizer step
        self.state = RunState()
        self.lock: RunLock | None = None
        self.run_dir: Path | None = None  # chosen, locked and (when resuming) loaded by open_run
        self.recorder: Recorder | None = None

    # ----- run directory and resume ---------------------------------------------------------------------------
    def open_run(self) -> Path:
        """Choose the run directory, refuse another run's, take its lock and load the checkpoint to resume from;
        a checkpoint of other settings is refused before anything is written. ``fit`` calls it first."""
        cfg = self.cfg.train
        chosen = ""
        if self.dist.is_main:
            chosen = str(self._choose_run_dir())
        if self.dist.distributed:
            box = [chosen]
            torch.distributed.broadcast_object_list(box, src=0)
            chosen = box[0]
        run_dir = Path(chosen)
        resume = self._resume_path(run_dir) if cfg.resume else None
        if resume is not None:  # a checkpoint of other settings is refused before anything is written
            check_compatible(load_file(resume, FORMAT, need=RESUME_NEEDS), self.config_dict, resume)
        if self.dist.is_main:  # refuse before taking the lock (which writes .lock), check again under it
            refuse_other_run(run_dir, resume is not None, cfg.overwrite, locked=False)
            self.lock = RunLock(run_dir).acquire()
            refuse_other_run(run_dir, resume is not None, cfg.overwrite, locked=True)
            remove_leftovers(run_dir)
        D.barrier()
        if resume is not None:
            self._load(resume)
        elif cfg.resume == "auto" and self.dist.is_main:
            print(f"train.resume=auto: no unfinished run to resume; starting a new run in {run_dir}", flush=True)
        self.run_dir = run_dir
        return run_dir

    def _choose_run_dir(self) -> Path:
        return choose_run_dir(self.cfg.train, self.cfg.name)

    def _resume_path(self, run_dir: Path) -> Path | None:
        if self.cfg.train.resume == "auto":
            path = run_dir / "last.pt"
            return path if path.is_file() else None
        return Path(self.cfg.train.resume).expanduser()

    def _load(self, path: Path) -> None:
        ckpt = load_file(path, FORMAT, need=RESUME_NEEDS)
        check_compatible(ckpt, self.config_dict, path)
        load_state(self.model, ckpt["model"], f"checkpoint {path}")
        try:
            self.optimizer.load_state_dict(ckpt["optimizer"])
            self.scheduler.load_state_dict(ckpt["scheduler"])
            self.scaler.load_state_dict(ckpt["scaler"])
        except (ValueError, KeyError, RuntimeError) as exc:
            raise CheckpointError(f"checkpoint {path}: optimizer state does not fit: {exc}") from None
        s = ckpt["state"]
        self.state = RunState(s["epoch"], s["best_val"], s["best_epoch"], s["wall_time"], list(s["history"]))
        rng = dict(ckpt["rng"])
        rng["numpy"] = unpack_numpy_rng(rng["numpy"])
        D.set_rng_state(rng)
        if self.dist.is_main:
            print(f"resumed from {path} after epoch {self.state.epoch}", flush=True)

    def _checkpoint(self) -> dict[str, Any]:
        rng = D.rng_state()
        rng["numpy"] = pack_numpy_rng(rng["numpy"])
        s, meta = self.state, self.parts.meta
        return {
            "format": FORMAT,
            "dhm_version": __version__,
            "config": self.config_dict,
            "model": unwrap(self.model).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "state": {
                "epoch": s.epoch,
                "best_val": s.best_val,
                "best_epoch": s.best_epoch,
                "wall_time": s.wall_time,
                "history": s.history,
            },
            "rng": rng,
            "model_spec": meta.model_spec,
            "classes": meta.classes,
            "input_size": meta.input_size,
            "mean": meta.mean,
            "std": meta.std,
        }

    # ----- training ---------------------------------------------------------------------------------------------
    def wrap(self) -> nn.Module:
        """The model as the steps run it: SyncBatchNorm (``train.sync_bn``), compiled, then DDP under torchrun."""
        if self.dist.distributed and self.cfg.train.sync_bn:  # same parameters, so the optimizer is unaffected
            self.model = self.parts.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        return wrap_model(self.model, self.compile_mode, self.dist)

    def train_one_epoch(self, model: nn.Module, epoch: int) -> dict[str, float]:
        """One epoch of optimizer steps; returns the epoch means of every loss component and the train accuracy."""
        return train_one_epoch(self, model, epoch)

    def run_steps(self, model: nn.Module, epoch: int) -> tuple[dict[str, Tensor], Tensor, int]:
        """The optimizer steps of one epoch (see :func:`dhm.engine.epoch.run_steps`)."""
        return run_steps(self, model, epoch)

    def _log(self, what: str, total: int, images: int) -> LogProgress | None:
        """Progress lines for a log file (rank 0, ``train.progress``, output not a terminal)."""
        if not (self.dist.is_main and self.cfg.train.progress):
            return None
        return LogProgress(what, total, images, self.cfg.train.log_every_s)

    def _bar(self, epoch: int, steps: int):
        if not (self.dist.is_main and self.cfg.train.progress and sys.stderr.isatty()):
            return None  # a log file gets the one line per epoch, not carriage-return bar frames
        from tqdm import tqdm

        return tqdm(total=steps, desc=f"epoch {epoch + 1}/{self.cfg.train.epochs}", leave=False, dynamic_ncols=True)

    def fit(self) -> dict[str, Any]:
        """Open the run (:meth:`open_run`), train to ``train.epochs`` (continuing a resumed run), then test, export
        and summarise (:func:`~dhm.engine.finish.finish_run`); returns the summary."""
        cfg, main = self.cfg, self.dist.is_main
        try:
            if self.run_dir is None:
                self.open_run()
            if main:
                (self.run_dir / "config.yaml").write_text(dump_config(cfg))
                self.recorder = Recorder(self.run_dir)
                if self.state.history:  # a resumed run: make best.pt and the metrics files agree with last.pt
                    self._repair()
            model = self.wrap()
            if main and self.compile_mode is not None and self.state.epoch < cfg.train.epochs:
                print(
                    f"compiling the model (torch.compile, mode {self.compile_mode}): the first steps are slow",
                    flush=True,
                )
            if main and cfg.train.cuda_graph and self.state.epoch < cfg.train.epochs:
                print("capturing the training step in a CUDA graph after 3 warm-up steps", flush=True)
            for epoch in range(self.state.epoch, cfg.train.epochs):
                start = time.perf_counter()
                record: dict[str, Any] = {"epoch": epoch + 1, "lr": None}  # columns: epoch, lr, ...
                record.update(self.train_one_epoch(model, epoch))
                record["lr"] = self._last_lr  # of the epoch's last step (the first is 0 during a warm-up)
                val = self.parts.val
                if val is not None:
                    log = self._log("validation batch", len(val), self.cfg.data.eval_batch_size)
                    record.update(
                        {f"val/{k}": v for k, v in evaluate(model, val, self.dist.device, self.amp, log=log).items()}
                    )
                record["time_s"] = time.perf_counter() - start
                self._end_epoch(epoch, record)
            return finish_run(self, model)
        finally:
            if self.recorder is not None:
                self.recorder.close()
            if self.lock is not None:
                self.lock.release()

    def _repair(self) -> None:
        """After a kill between the writes of an epoch's end: last.pt is the commit point, so the metrics files are
        rewritten from its history and best.pt is restored from it when that epoch was the best."""
        self.recorder.write(self.state.history)
        best = self.run_dir / "best.pt"
        if self.state.best_epoch == self.state.epoch:
            stale = not best.is_file() or load_file(best, FORMAT)["state"]["epoch"] != self.state.epoch
            if stale:
                save_atomic(load_file(self.run_dir / "last.pt", FORMAT), best)

    def _end_epoch(self, epoch: int, record: dict[str, Any]) -> None:
        s = self.state
        s.epoch, s.wall_time = epoch + 1, s.wall_time + record["time_s"]
        s.history.append(record)
        score = record.get("val/acc1/main", float(epoch))  # no validation split: the last epoch is the best
        improved = score >= s.best_val  # on ties the later epoch (lower lr) wins
        if improved:
            s.best_val, s.best_epoch = score, epoch + 1
        if self.dist.is_main:
            ckpt = self._checkpoint()
            save_atomic(ckpt, self.run_dir / "last.pt")
            if improved:
                save_atomic(ckpt, self.run_dir / "best.pt")
            self.recorder.write(s.history)
            print(self._epoch_line(record), flush=True)
        D.barrier()

    def _epoch_line(self, r: dict[str, Any]) -> str:
        heads = " ".join(f"{k.split('/')[-1]} {v:.2f}" for k, v in r.items() if k.startswith("val/acc1/"))
        return (
            f"epoch {r['epoch']}/{self.cfg.train.epochs}  loss {r['train/loss']:.4f}  train acc "
            f"{r['train/acc1']:.2f}  val acc [{heads}]  lr {r['lr']:.4g}  {r['images_per_s']:.0f} img/s  "
            f"{r['time_s']:.1f}s"
        )


def train(cfg: Config) -> dict[str, Any]:
    """The entry point of a training run (``dhm train``): join the process group when launched by torchrun, train
    ``cfg``, leave the group; returns the summary (what ``summary.json`` holds)."""
    dist = D.setup(cfg.train.device)
    try:
        return Trainer(cfg, dist=dist).fit()
    finally:
        D.teardown()
