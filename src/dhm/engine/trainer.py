"""The Trainer: built parts -> a run directory (open or resume it, train the epochs, checkpoint each one, end the
run). The entry points that build it from a config are in :mod:`dhm.engine.entry`."""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..branches import unwrap
from ..config import Config, dump_config, to_dict
from ..errors import ConfigError, Terminated
from ..steps import STEPS, EagerStep, make_step
from ..tasks import LAST, select_metric
from . import dist as D
from .checkpoint import FORMAT, RESUME_NEEDS, check_compatible, check_same_classes, load_file, save_atomic
from .compiling import auto_compile, wrap_model
from .epoch import run_steps, train_one_epoch
from .evaluate import evaluate
from .finish import finish_run
from .header import run_header
from .parts import Parts, steps_per_epoch
from .progress import Display
from .recorder import Recorder
from .rundir import RunLock, choose_run_dir, refuse_other_run, remove_leftovers
from .runtime import Runtime
from .state import RunState, restore_run, run_checkpoint


class Trainer:
    """Trains built parts into a run directory: checkpoints every epoch, resumes, writes the metrics files, and
    ends the run (:func:`~dhm.engine.finish.finish_run`). Rank 0 writes the run directory; every process trains.
    It builds nothing: the entry point resolves the runtime and builds the parts (:func:`build_trainer` does both
    from a config), and under torchrun the entry point owns the process group (:func:`dhm.engine.train`).

    Example:
        >>> summary = build_trainer(load_config("demo")).fit()
        >>> summary["test"]  # the task's metrics of the checkpoint chosen on validation
    """

    def __init__(self, cfg: Config, parts: Parts, runtime: Runtime) -> None:
        self.cfg, self.parts, self.runtime = cfg, parts, runtime
        self.config_dict = to_dict(cfg)
        self.dist, self.task = runtime.dist, parts.task
        self.model, self.loss_fn = parts.model, parts.loss_fn
        self.optimizer, self.scheduler = parts.optimizer, parts.scheduler
        self.head_names: tuple[str, ...] = parts.head_names
        self.steps_per_epoch = steps_per_epoch(parts.train, cfg.train.limit_batches)
        total = self.steps_per_epoch * cfg.train.epochs
        mode, why = auto_compile(runtime.compile_mode, total, runtime.dist.device, runtime.amp)
        self.scaler = torch.amp.GradScaler(self.dist.device.type, enabled=runtime.amp == "fp16")
        step_cls = STEPS.get(parts.step)
        step_cls.check(
            self.model,
            distributed=self.dist.distributed,
            accum=cfg.train.accum_steps,
            cuda_graph=runtime.cuda_graph,
            amp=runtime.amp,
            device=self.dist.device,
            optimizer=self.optimizer,
            loss_fn=self.loss_fn,
            sampler=cfg.data.sampler,
            batch_size=cfg.data.batch_size,
        )
        if step_cls.eager_only and mode is not None:
            if runtime.compile_mode != "auto":
                raise ConfigError(
                    f"the {parts.step} step of loss.mode={cfg.loss.mode} runs eagerly: set train.compile=false"
                )
            mode, why = None, ""
        if mode != runtime.compile_mode:
            self.runtime = runtime = dataclasses.replace(runtime, compile_mode=mode)
        if why and runtime.dist.is_main:
            print(why, flush=True)
        self.select = select_metric(self.task, cfg.train.select, self.head_names or ("main",))
        self.display = Display(self.dist.is_main and cfg.train.progress, cfg.train.epochs, cfg.train.log_every_s)
        self.step: EagerStep | None = None  # made for the wrapped model, kept across epochs (a captured graph too)
        self.last_lr = cfg.optim.lr  # the learning rate of the latest optimizer step
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
        if resume is not None:  # a checkpoint of other settings or other data is refused before anything is written
            ckpt = load_file(resume, FORMAT, need=RESUME_NEEDS)
            check_compatible(ckpt, self.config_dict, resume)
            check_same_classes(ckpt, self.parts.meta.classes, resume)
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
        return resume_path(self.cfg, run_dir)

    def _load(self, path: Path) -> None:
        self.state = restore_run(path, self.parts, self.scaler, self.config_dict)
        if self.dist.is_main:
            print(f"resumed from {path} after epoch {self.state.epoch}", flush=True)

    # ----- training ---------------------------------------------------------------------------------------------
    def wrap(self) -> nn.Module:
        """The model as the steps run it: SyncBatchNorm (``train.sync_bn``), compiled, then DDP under torchrun."""
        if self.dist.distributed and self.runtime.sync_bn:  # same parameters, so the optimizer is unaffected
            self.model = self.parts.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        return wrap_model(self.model, self.runtime.compile_mode, self.dist)

    def step_for(self, model: nn.Module) -> EagerStep:
        """The step object of the wrapped ``model``, made once and kept across epochs."""
        if self.step is None or self.step.model is not model:
            r, train = self.runtime, self.cfg.train
            self.step = make_step(
                self.parts.step,
                model,
                self.loss_fn,
                self.optimizer,
                self.scaler,
                r.amp,
                r.device,
                train.accum_steps,
                self.dist.distributed,
                counters=self.task.step_counters,
            )
        return self.step

    def _epoch_args(self) -> dict[str, Any]:
        return {
            "steps": self.steps_per_epoch,
            "accum": self.cfg.train.accum_steps,
            "display": self.display,
            "last_lr": self.last_lr,
            "batch_size": self.cfg.data.batch_size,
        }

    def train_one_epoch(self, model: nn.Module, epoch: int) -> dict[str, float]:
        """One epoch of optimizer steps (:func:`dhm.engine.epoch.train_one_epoch`); returns its record entries."""
        step = self.step_for(model)
        record, self.last_lr = train_one_epoch(
            epoch, model, step, self.parts, self.runtime, self.task, **self._epoch_args(), kept_epoch=self.state.epoch
        )
        return record

    def run_steps(self, model: nn.Module, epoch: int) -> tuple[dict[str, Tensor], Tensor | None, int]:
        """The optimizer steps of one epoch (:func:`dhm.engine.epoch.run_steps`): device meters, the task's
        counters and the image count."""
        done = run_steps(epoch, model, self.step_for(model), self.parts, self.runtime, self.task, **self._epoch_args())
        self.last_lr = done.last_lr
        return done.sums, done.counters, done.seen

    def validate(self, model: nn.Module) -> dict[str, float]:
        """The selection split's metrics, as ``<split>/<metric>`` record entries (none without that split)."""
        split, loader = self.task.select_split, self.parts.val
        if loader is None:
            return {}
        log = self.display.log("validation batch", len(loader), self.cfg.data.eval_batch_size)
        result = evaluate(model, loader, self.dist.device, self.runtime.amp, log=log, task=self.task)
        return {f"{split}/{k}": v for k, v in result.items()}

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
            if main and self.state.epoch < cfg.train.epochs:  # what this run is, before its first epoch
                print("\n".join(run_header(cfg, self.parts, self.runtime)), flush=True)
            mode = self.runtime.compile_mode
            if main and mode is not None and self.state.epoch < cfg.train.epochs:
                print(f"compiling the model (torch.compile, mode {mode}): the first steps are slow", flush=True)
            if main and cfg.train.cuda_graph and self.state.epoch < cfg.train.epochs:
                print("capturing the training step in a CUDA graph after 3 warm-up steps", flush=True)
            for epoch in range(self.state.epoch, cfg.train.epochs):
                start = time.perf_counter()
                record: dict[str, Any] = {"epoch": epoch + 1, "lr": None}  # columns: epoch, lr, ...
                record.update(self.train_one_epoch(model, epoch))
                record["lr"] = self.last_lr  # of the epoch's last step (the first is 0 during a warm-up)
                D.broadcast_buffers(unwrap(model))  # every rank evaluates the model rank 0 saves
                record.update(self.validate(model))
                record["time_s"] = time.perf_counter() - start
                self._end_epoch(epoch, record)
            return finish_run(model, self.parts, self.runtime, self.state, self.run_dir, self.config_dict, self.select)
        except (KeyboardInterrupt, Terminated) as exc:  # say what was kept: the CLI prints it
            raise type(exc)(self._kept()) from None
        finally:
            if self.recorder is not None:
                self.recorder.close()
            if self.lock is not None:
                self.lock.release()

    def _kept(self) -> str:
        """What an interrupted run leaves: its last finished epoch in last.pt, or nothing to resume."""
        if self.run_dir is not None and self.state.epoch > 0:
            return f"{self.run_dir}/last.pt keeps epoch {self.state.epoch} (train.resume=auto continues it)"
        where = f" in {self.run_dir}" if self.run_dir is not None else ""
        return f"no epoch had finished{where}, so there is nothing to resume"

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
        key = f"{self.task.select_split}/{self.select}"
        if key in record and self.select != LAST:
            score = record[key] if self.task.higher_is_better(self.select) else -record[key]
        else:
            score = float(epoch)  # train.select=last, or no validation split: the last epoch is the best
        improved = score >= s.best_val  # on ties the later epoch (lower lr) wins
        if improved:
            s.best_val, s.best_epoch = score, epoch + 1
        if self.dist.is_main:
            ckpt = run_checkpoint(self.state, self.parts, self.scaler, self.config_dict)
            save_atomic(ckpt, self.run_dir / "last.pt")
            if improved:
                save_atomic(ckpt, self.run_dir / "best.pt")
            if self.cfg.train.keep_every and (epoch + 1) % self.cfg.train.keep_every == 0:
                save_atomic(ckpt, self.run_dir / f"epoch{epoch + 1:04d}.pt")
            self.recorder.write(s.history)
            print(self._epoch_line(record), flush=True)
        D.barrier()

    def _epoch_line(self, r: dict[str, Any]) -> str:
        return (
            f"epoch {r['epoch']}/{self.cfg.train.epochs}  loss {r['train/loss']:.4f}  {self.task.epoch_fields(r)}  "
            f"lr {r['lr']:.4g}  {r['images_per_s']:.0f} img/s  {r['time_s']:.1f}s"
        )


def resume_path(cfg: Config, run_dir: Path) -> Path | None:
    """The checkpoint a run resumes from: ``train.resume`` (a path), or ``last.pt`` of the run directory with
    ``train.resume=auto`` (None when there is none)."""
    if cfg.train.resume == "auto":
        path = run_dir / "last.pt"
        return path if path.is_file() else None
    return Path(cfg.train.resume).expanduser() if cfg.train.resume else None


def check_resume_early(cfg: Config) -> None:
    """Refuse a resume with changed settings before the data is read (decoding a dataset can take minutes): the
    same check :meth:`Trainer.open_run` makes, on the checkpoint the run would resume from."""
    if not cfg.train.resume or os.environ.get("RANK", "0") != "0":
        return
    path = resume_path(cfg, choose_run_dir(cfg.train, cfg.name))
    if path is not None:
        check_compatible(load_file(path, FORMAT, need=RESUME_NEEDS), to_dict(cfg), path)
