"""The training loop: ``Trainer(cfg).fit()`` -> summary dict. Plain functions for one epoch and evaluation."""

from __future__ import annotations

import json
import platform
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..branches import DHMModel, strip, unwrap
from ..config import Config, dump_config, to_dict
from ..errors import CheckpointError, ConfigError, DivergedError
from ..version import __version__
from . import dist as D
from .build import build_data, build_loss, build_model, model_spec
from .checkpoint import (
    FORMAT,
    RESUME_NEEDS,
    check_compatible,
    deploy_payload,
    load_file,
    load_state,
    pack_numpy_rng,
    save_atomic,
    unpack_numpy_rng,
)
from .compiling import compile_model, records_cuda_graphs, resolve_compile
from .optim import build_optimizer, build_scheduler
from .plots import plot_history
from .precision import autocast, resolve_amp, resolve_channels_last
from .progress import LogProgress
from .recorder import Recorder, summary_table
from .rundir import RunLock, refuse_other_run, remove_leftovers, unfinished_runs
from .step import EagerStep, GraphStep, make_step


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader,
    device: torch.device,
    amp: str = "off",
    heads: bool = True,
    log: LogProgress | None = None,
) -> dict[str, float]:
    """Top-1 accuracy (%) of the main head, and with ``heads`` of every head and of their ensemble (mean of the
    softmax outputs); summed over processes. Runs in eval mode and restores the previous mode. ``log`` prints
    progress lines for long evaluations."""
    inner = unwrap(model)
    was_training = inner.training
    inner.eval()
    names = inner.head_names if heads and isinstance(inner, DHMModel) else ("main",)
    correct = torch.zeros(len(names) + 2, dtype=torch.float64, device=device)  # heads, ensemble, all agree
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    count = torch.zeros((), dtype=torch.float64, device=device)
    for i, (x, y) in enumerate(loader):
        if log is not None and i:
            log.update(i)  # batches done so far
        with autocast(device, amp):
            outs = inner.forward_heads(x) if len(names) > 1 else (inner(x),)
        outs = [o.float() for o in outs]
        ensemble = torch.stack([o.softmax(-1) for o in outs]).mean(0)
        for k, o in enumerate([*outs, ensemble]):
            correct[k] += (o.argmax(-1) == y).sum()
        predictions = torch.stack([o.argmax(-1) for o in outs])
        correct[-1] += (predictions == predictions[0]).all(0).sum()
        loss_sum += F.cross_entropy(outs[0], y, reduction="sum")
        count += y.numel()
    D.all_reduce_sum(correct), D.all_reduce_sum(loss_sum), D.all_reduce_sum(count)
    inner.train(was_training)
    n = max(count.item(), 1.0)
    result = {f"acc1/{name}": 100.0 * c / n for name, c in zip([*names, "ensemble"], correct.tolist())}
    if len(names) == 1:
        result.pop("acc1/ensemble")
    else:  # how often every head predicts the main head's class (the mimicking's visible effect)
        result["agree"] = 100.0 * correct[-1].item() / n
    result["loss"] = loss_sum.item() / n
    return result


NONFINITE = "nonfinite/"  # meters that flag non-finite loss terms (not averaged, not reported)


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
        cfg = self.cfg.train
        if cfg.resume not in ("", "auto"):
            return Path(cfg.resume).expanduser().parent
        if cfg.out_dir:
            return Path(cfg.out_dir).expanduser()
        base = Path(cfg.runs_root).expanduser() / self.cfg.name
        unfinished = unfinished_runs(base) if cfg.resume == "auto" else []  # never a run that is still training
        if unfinished:
            return unfinished[0]
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        run_dir, k = base / stamp, 1
        while run_dir.exists():
            run_dir, k = base / f"{stamp}-{k}", k + 1
        return run_dir

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
        start = time.perf_counter()
        sums, correct, seen = self.run_steps(model, epoch)
        tensors = [*self.model.parameters(), *(b for b in self.model.buffers() if b.is_floating_point())]
        sums[f"{NONFINITE}weights"] = torch.stack([(~torch.isfinite(t)).any() for t in tensors]).any().float()
        # The epoch's one host round trip: sum the device meters over processes and read them.
        heads = len(correct)
        totals = torch.cat([torch.stack(list(sums.values())), correct.float(), correct.new_full((1,), float(seen))])
        D.all_reduce_sum(totals)
        values = totals.tolist()
        n = values[-1]
        health = {k.removeprefix(NONFINITE): v for k, v in zip(sums, values) if k.startswith(NONFINITE)}
        terms = [k for k, v in health.items() if k not in ("steps", "weights") and v > 0]
        if terms or health["weights"] > 0:
            step = int(health["steps"] // self.dist.world) + 1
            kept = f"last.pt keeps epoch {self.state.epoch}" if self.state.epoch else "no epoch had finished"
            shown = ", ".join(terms[:4]) + (f" and {len(terms) - 4} more" if len(terms) > 4 else "")
            where = (
                f"the loss became non-finite in epoch {epoch + 1} at step {step} ({shown})"
                if terms
                else (f"the weights became non-finite in epoch {epoch + 1} (the loss stayed finite)")
            )
            raise DivergedError(f"{where}; the run stops ({kept}): lower optim.lr or check the data")
        result = {f"train/{k}": v / n for k, v in zip(sums, values) if not k.startswith(NONFINITE)}
        result["train/acc1"] = 100.0 * values[len(sums)] / n  # the main head
        if heads > 1:
            for name, hits in zip(self.head_names, values[len(sums) : len(sums) + heads]):
                result[f"train/acc1/{name}"] = 100.0 * hits / n
        result["images_per_s"] = n / (time.perf_counter() - start)
        return result

    def run_steps(self, model: nn.Module, epoch: int) -> tuple[dict[str, Tensor], Tensor, int]:
        """The optimizer steps of one epoch. Returns device meters (loss sums weighted by batch size, correct
        counts per head, main first) and the local image count. Nothing in here waits for the device unless a
        progress bar is drawn."""
        cfg, device = self.cfg, self.dist.device
        accum, steps = cfg.train.accum_steps, self.steps_per_epoch
        loader = self.data.train
        loader.set_epoch(epoch)
        model.train()
        correct = torch.zeros(len(self.head_names), device=device)
        seen = 0
        bar = self._bar(epoch, steps)
        log = self._log(f"epoch {epoch + 1} step", steps, cfg.data.batch_size) if bar is None else None
        graphs = records_cuda_graphs(self.compile_mode, device)
        run = self._step_fn(model)
        meters: Tensor | None = None
        bad: Tensor | None = None  # which loss terms went non-finite this epoch
        finite_steps = torch.zeros((), device=device)  # micro-steps before the first non-finite one
        start = time.perf_counter()
        for i, (x, y) in enumerate(loader):
            step, micro = divmod(i, accum)
            if step >= steps:
                break
            if graphs:  # a new training step: the previous step's graph outputs may be overwritten
                torch.compiler.cudagraph_mark_step_begin()
            self.loss_fn.set_progress(epoch + step / steps)
            last_micro = micro == accum - 1
            values, hits = run(x, y, last_micro)
            if last_micro:
                self._last_lr = self.optimizer.param_groups[0]["lr"]
                self.scheduler.step()
            meters = values * len(y) if meters is None else meters + values * len(y)
            flags = (~torch.isfinite(values)).float()  # on the device: no sync
            bad = flags if bad is None else torch.maximum(bad, flags)
            finite_steps += bad.amax() == 0
            correct += hits
            seen += len(y)
            if log is not None and last_micro:
                log.update(step + 1)
            if bar is not None and last_micro:
                bar.update(1)
                if step % 5 == 0 or step == steps - 1:
                    rate = seen * self.dist.world / (time.perf_counter() - start)
                    bar.set_postfix(
                        loss=f"{meters[run.keys.index('loss')].item() / seen:.3f}",
                        acc=f"{100 * correct[0].item() / seen:.1f}",
                        img_s=f"{rate:.0f}",
                    )
        if bar is not None:
            bar.close()
        sums = dict(zip(run.keys, meters.unbind())) if meters is not None else {}
        if bad is not None:  # read with the meters at the epoch's one sync point
            sums.update({f"{NONFINITE}{k}": v for k, v in zip(run.keys, bad.unbind())})
            sums[f"{NONFINITE}steps"] = finite_steps
        return sums, correct, seen

    def _step_fn(self, model: nn.Module) -> EagerStep:
        """The step object for ``model`` (the wrapped one), made once per run and kept across epochs (a captured
        CUDA graph is reused by every later epoch)."""
        if self._step is None or self._step.model is not model:
            self._step = make_step(
                self.cfg.train.cuda_graph,
                model,
                self.loss_fn,
                self.optimizer,
                self.scaler,
                self.amp,
                self.dist.device,
                self.cfg.train.accum_steps,
                self.dist.distributed,
            )
        return self._step

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
            return self._finish(model)
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

    def _finish(self, model: nn.Module) -> dict[str, Any]:
        cfg, device = self.cfg, self.dist.device
        test_last = evaluate(model, self.data.test, device, self.amp)
        best_path = self.run_dir / "best.pt"
        D.barrier()
        if best_path.is_file() and self.state.best_epoch != self.state.epoch:
            load_state(unwrap(self.model), load_file(best_path, FORMAT)["model"], f"checkpoint {best_path}")
        test_best = (
            evaluate(model, self.data.test, device, self.amp)
            if self.state.best_epoch != self.state.epoch
            else test_last
        )
        best_record = self.state.history[self.state.best_epoch - 1] if self.state.history else {}
        val_best = {k.removeprefix("val/"): v for k, v in best_record.items() if k.startswith("val/")}
        summary = {
            "test_acc1": test_best["acc1/main"],
            "test_acc1_last": test_last["acc1/main"],
            "best_val_acc1": val_best.get("acc1/main"),
            "best_epoch": self.state.best_epoch,
            "epochs": self.state.epoch,
            "wall_time_s": self.state.wall_time,
            "test": test_best,
            "test_last": test_last,
            "val_best": val_best,
            "run_dir": str(self.run_dir),
            "world_size": self.dist.world,
            "device": str(device),
            "versions": {"dhm": __version__, "torch": torch.__version__, "python": platform.python_version()},
            "config": self.config_dict,
        }
        if self.dist.is_main:
            backbone = strip(unwrap(self.model))
            meta = {
                "classes": self.data.bundle.classes,
                "mean": list(self.data.bundle.mean),
                "std": list(self.data.bundle.std),
                "config": self.config_dict,
                "input_size": self._input_size(),
            }
            save_atomic(
                deploy_payload(backbone, model_spec(cfg, self.data.num_classes, self.in_channels), meta),
                self.run_dir / "deploy.pt",
            )
            plot_history(self.state.history, self.run_dir)
            heads = unwrap(self.model).head_names if isinstance(unwrap(self.model), DHMModel) else ("main",)
            print(summary_table(list(heads), val_best, test_best, test_last), flush=True)
            tmp = self.run_dir / ".summary.json.tmp"
            tmp.write_text(json.dumps(summary, indent=2))
            tmp.replace(self.run_dir / "summary.json")
        return summary


def train(cfg: Config) -> dict[str, Any]:
    """Train ``cfg`` and return its summary (what ``summary.json`` holds)."""
    return Trainer(cfg).fit()
