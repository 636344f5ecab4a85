"""The training loop: ``Trainer(cfg).fit()`` -> summary dict. Plain functions for one epoch and evaluation."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..branches import DHMModel, unwrap
from ..config import Config, dump_config, to_dict
from ..errors import CheckpointError, ConfigError
from ..version import __version__
from . import dist as D
from .build import build_data, build_loss, build_model, model_spec
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
from .compiling import compile_model, records_cuda_graphs, resolve_compile
from .epoch import run_steps, train_one_epoch
from .evaluate import evaluate
from .finish import finish_run
from .optim import build_optimizer, build_scheduler
from .precision import resolve_amp, resolve_channels_last
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
    """Trains one config. Rank 0 writes the run directory; every process trains.

    Example:
        >>> summary = Trainer(load_config("demo")).fit()
        >>> summary["test_acc1"]
    """

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.config_dict = to_dict(cfg)
        if cfg.train.accum_steps < 1 or cfg.train.epochs < 1:
            raise ConfigError("train.accum_steps and train.epochs must be >= 1")
        if cfg.train.threads > 0:
            torch.set_num_threads(cfg.train.threads)
        self.dist = D.setup(cfg.train.device)
        self.amp = resolve_amp(cfg.train.amp, self.dist.device)
        self.channels_last = resolve_channels_last(cfg.train.channels_last, self.dist.device)
        self.compile_mode = resolve_compile(cfg.train.compile)
        if cfg.train.cuda_graph and records_cuda_graphs(self.compile_mode, self.dist.device):
            raise ConfigError("train.cuda_graph=true captures the step itself: use it with train.compile=true or false")
        if cfg.train.sync_bn and self.dist.device.type != "cuda":
            raise ConfigError("train.sync_bn=true needs CUDA devices (PyTorch's SyncBatchNorm has no CPU kernel)")
        D.seed_everything(cfg.train.seed, cfg.train.deterministic)
        self.data = build_data(cfg, self.dist, self.channels_last)
        self.in_channels = cfg.model.in_channels or self.data.bundle.channels
        self.model = build_model(cfg, self.data.num_classes, self.in_channels).to(self.dist.device)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        heads = self.model.head_names if isinstance(self.model, DHMModel) else None
        self.head_names: tuple[str, ...] = tuple(heads) if heads else ("main",)
        self.loss_fn = build_loss(cfg, heads).to(self.dist.device)
        self.optimizer = build_optimizer(self.model, cfg.optim)
        self.steps_per_epoch = self._steps()
        self.scheduler = build_scheduler(self.optimizer, cfg.optim, cfg.train.epochs, self.steps_per_epoch)
        self.scaler = torch.amp.GradScaler(self.dist.device.type, enabled=self.amp == "fp16")
        if cfg.train.cuda_graph:
            GraphStep.check(self.dist.device, self.dist.distributed, cfg.train.accum_steps, self.amp, self.optimizer)
        self._step: EagerStep | None = None
        self._last_lr = cfg.optim.lr  # the learning rate of the latest optimizer step
        self.state = RunState()
        self.lock = None
        self.run_dir = self._run_dir()
        self.recorder: Recorder | None = None

    def _steps(self) -> int:
        steps = self.data.train.plan.steps
        return min(steps, self.cfg.train.limit_batches) if self.cfg.train.limit_batches > 0 else steps

    # ----- run directory and resume ---------------------------------------------------------------------------
    def _run_dir(self) -> Path:
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
        s = self.state
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
            "model_spec": model_spec(self.cfg, self.data.num_classes, self.in_channels),
            "classes": self.data.bundle.classes,
            "input_size": self._input_size(),
            "mean": list(self.data.bundle.mean),
            "std": list(self.data.bundle.std),
        }

    # ----- training ---------------------------------------------------------------------------------------------
    def _wrap(self) -> nn.Module:
        if self.dist.distributed and self.cfg.train.sync_bn:  # same parameters, so the optimizer is unaffected
            self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        model = compile_model(self.model, self.compile_mode)  # compile first, then DDP (as timm does)
        if self.dist.distributed:
            ids = [self.dist.device.index] if self.dist.device.type == "cuda" else None
            model = nn.parallel.DistributedDataParallel(model, device_ids=ids)
        return model

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
        """Train to ``train.epochs`` (continuing a resumed run), then test, export and summarise."""
        cfg, main = self.cfg, self.dist.is_main
        if main:
            (self.run_dir / "config.yaml").write_text(dump_config(cfg))
            self.recorder = Recorder(self.run_dir)
            if self.state.history:  # a resumed run: make best.pt and the metrics files agree with last.pt
                self._repair()
        model = self._wrap()
        if main and self.compile_mode is not None and self.state.epoch < cfg.train.epochs:
            print(
                f"compiling the model (torch.compile, mode {self.compile_mode}): the first steps are slow", flush=True
            )
        if main and cfg.train.cuda_graph and self.state.epoch < cfg.train.epochs:
            print("capturing the training step in a CUDA graph after 3 warm-up steps", flush=True)
        try:
            for epoch in range(self.state.epoch, cfg.train.epochs):
                start = time.perf_counter()
                record: dict[str, Any] = {"epoch": epoch + 1, "lr": None}  # columns: epoch, lr, ...
                record.update(self.train_one_epoch(model, epoch))
                record["lr"] = self._last_lr  # of the epoch's last step (the first is 0 during a warm-up)
                if self.data.val is not None:
                    log = self._log("validation batch", len(self.data.val), self.cfg.data.eval_batch_size)
                    val = evaluate(model, self.data.val, self.dist.device, self.amp, log=log)
                    record.update({f"val/{k}": v for k, v in val.items()})
                record["time_s"] = time.perf_counter() - start
                self._end_epoch(epoch, record)
            return finish_run(self, model)
        finally:
            if self.recorder is not None:
                self.recorder.close()
            if self.lock is not None:
                self.lock.release()
            D.teardown()

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

    def _input_size(self) -> list[int]:
        train = self.data.bundle.train
        if hasattr(train, "images"):
            return list(train.images.shape[1:])
        size = self.cfg.data.image_size or 224
        return [self.in_channels, size, size]

    def _epoch_line(self, r: dict[str, Any]) -> str:
        heads = " ".join(f"{k.split('/')[-1]} {v:.2f}" for k, v in r.items() if k.startswith("val/acc1/"))
        return (
            f"epoch {r['epoch']}/{self.cfg.train.epochs}  loss {r['train/loss']:.4f}  train acc "
            f"{r['train/acc1']:.2f}  val acc [{heads}]  lr {r['lr']:.4g}  {r['images_per_s']:.0f} img/s  "
            f"{r['time_s']:.1f}s"
        )


def train(cfg: Config) -> dict[str, Any]:
    """Train ``cfg`` and return its summary (what ``summary.json`` holds)."""
    return Trainer(cfg).fit()
