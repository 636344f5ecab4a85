"""One training epoch: the optimizer steps (no host-device synchronisation inside them), then the epoch's one
host round trip that reads the meters and the non-finite flags."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from ..errors import DivergedError
from . import dist as D
from .compiling import records_cuda_graphs
from .step import EagerStep, make_step

if TYPE_CHECKING:
    from .trainer import Trainer

NONFINITE = "nonfinite/"  # meters that flag non-finite loss terms or weights (not averaged, not reported)


def train_one_epoch(t: Trainer, model: nn.Module, epoch: int) -> dict[str, float]:
    """One epoch of optimizer steps; returns the epoch means of every loss component and the train accuracy."""
    start = time.perf_counter()
    sums, correct, seen = run_steps(t, model, epoch)
    tensors = [*t.model.parameters(), *(b for b in t.model.buffers() if b.is_floating_point())]
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
        step = int(health["steps"] // t.dist.world) + 1
        kept = f"last.pt keeps epoch {t.state.epoch}" if t.state.epoch else "no epoch had finished"
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
        for name, hits in zip(t.head_names, values[len(sums) : len(sums) + heads]):
            result[f"train/acc1/{name}"] = 100.0 * hits / n
    result["images_per_s"] = n / (time.perf_counter() - start)
    return result


def run_steps(t: Trainer, model: nn.Module, epoch: int) -> tuple[dict[str, Tensor], Tensor, int]:
    """The optimizer steps of one epoch. Returns device meters (loss sums weighted by batch size, correct
    counts per head, main first) and the local image count. Nothing in here waits for the device unless a
    progress bar is drawn."""
    cfg, device = t.cfg, t.dist.device
    accum, steps = cfg.train.accum_steps, t.steps_per_epoch
    loader = t.parts.train
    loader.set_epoch(epoch)
    model.train()
    correct = torch.zeros(len(t.head_names), device=device)
    seen = 0
    bar = t._bar(epoch, steps)
    log = t._log(f"epoch {epoch + 1} step", steps, cfg.data.batch_size) if bar is None else None
    graphs = records_cuda_graphs(t.compile_mode, device)
    run = step_fn(t, model)
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
        t.loss_fn.set_progress(epoch + step / steps)
        last_micro = micro == accum - 1
        values, hits = run(x, y, last_micro)
        if last_micro:
            t._last_lr = t.optimizer.param_groups[0]["lr"]
            t.scheduler.step()
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
                rate = seen * t.dist.world / (time.perf_counter() - start)
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


def step_fn(t: Trainer, model: nn.Module) -> EagerStep:
    """The step object for ``model`` (the wrapped one), made once per run and kept across epochs (a captured
    CUDA graph is reused by every later epoch)."""
    if t._step is None or t._step.model is not model:
        t._step = make_step(
            t.cfg.train.cuda_graph,
            model,
            t.loss_fn,
            t.optimizer,
            t.scaler,
            t.amp,
            t.dist.device,
            t.cfg.train.accum_steps,
            t.dist.distributed,
        )
    return t._step
