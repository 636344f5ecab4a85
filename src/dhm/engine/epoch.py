"""One training epoch: the optimizer steps (no host-device synchronisation inside them), then the epoch's one
host round trip that reads the loss meters, the task's counters and the non-finite flags. Everything comes in as
an argument; the results go out as the return value."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..data.batch import batch_meta
from ..errors import DivergedError
from ..steps import EagerStep
from ..tasks import Task
from . import dist as D
from .parts import Parts
from .progress import Display
from .runtime import Runtime

NONFINITE = "nonfinite/"  # meters that flag non-finite loss terms or weights (not averaged, not reported)


@dataclass
class Steps:
    """The device meters of one epoch's steps: loss sums weighted by batch size (and the non-finite flags), the
    task's counters, the local image count, and the learning rate of the last optimizer step."""

    sums: dict[str, Tensor]
    counters: Tensor | None
    seen: int
    last_lr: float


def run_steps(
    epoch: int,
    model: nn.Module,
    step: EagerStep,
    parts: Parts,
    runtime: Runtime,
    task: Task,
    *,
    steps: int,
    accum: int,
    display: Display,
    last_lr: float,
    batch_size: int = 0,
) -> Steps:
    """The optimizer steps of one epoch. Nothing in here waits for the device unless a progress bar is drawn."""
    loader = parts.train
    loader.set_epoch(epoch)
    model.train()
    seen = 0
    bar = display.bar(epoch, steps)
    log = display.log(f"epoch {epoch + 1} step", steps, batch_size) if bar is None else None
    meters: Tensor | None = None
    counters: Tensor | None = None
    bad: Tensor | None = None  # which loss terms went non-finite this epoch
    finite_steps = torch.zeros((), device=runtime.device)  # micro-steps before the first non-finite one
    start = time.perf_counter()
    for i, batch in enumerate(loader):
        x, y = batch[0], batch[1]
        index, micro = divmod(i, accum)
        if index >= steps:
            break
        if runtime.graphs:  # a new training step: the previous step's graph outputs may be overwritten
            torch.compiler.cudagraph_mark_step_begin()
        parts.loss_fn.set_progress(epoch + index / steps)
        last_micro = micro == accum - 1
        values, counts = step(x, y, last_micro, batch_meta(batch))
        if last_micro:
            last_lr = parts.optimizer.param_groups[0]["lr"]
            parts.scheduler.step()
        meters = values * len(y) if meters is None else meters + values * len(y)
        flags = (~torch.isfinite(values)).float()  # on the device: no sync
        bad = flags if bad is None else torch.maximum(bad, flags)
        finite_steps += bad.amax() == 0
        counters = counts.float() if counters is None else counters + counts
        seen += len(y)
        if log is not None and last_micro:
            log.update(index + 1)
        if bar is not None and last_micro:
            bar.update(1)
            if index % 5 == 0 or index == steps - 1:
                rate = seen * runtime.dist.world / (time.perf_counter() - start)
                shown = {"loss": f"{meters[step.keys.index('loss')].item() / seen:.3f}"}
                bar.set_postfix(**shown, **task.progress(counters, seen), img_s=f"{rate:.0f}")
    if bar is not None:
        bar.close()
    sums = dict(zip(step.keys, meters.unbind())) if meters is not None else {}
    if bad is not None:  # read with the meters at the epoch's one sync point
        sums.update({f"{NONFINITE}{k}": v for k, v in zip(step.keys, bad.unbind())})
        sums[f"{NONFINITE}steps"] = finite_steps
    return Steps(sums, counters, seen, last_lr)


def train_one_epoch(
    epoch: int,
    model: nn.Module,
    step: EagerStep,
    parts: Parts,
    runtime: Runtime,
    task: Task,
    *,
    steps: int,
    accum: int,
    display: Display,
    last_lr: float,
    kept_epoch: int,
    batch_size: int = 0,
) -> tuple[dict[str, float], float]:
    """One epoch of optimizer steps. Returns the epoch's record entries (``train/<loss component>``, the task's
    ``train/<metric>``, ``images_per_s``) and the learning rate of its last step. ``kept_epoch`` (the epochs
    last.pt holds) is named when the run diverges."""
    start = time.perf_counter()
    done = run_steps(
        epoch,
        model,
        step,
        parts,
        runtime,
        task,
        steps=steps,
        accum=accum,
        display=display,
        last_lr=last_lr,
        batch_size=batch_size,
    )
    sums = done.sums
    tensors = [*parts.model.parameters(), *(b for b in parts.model.buffers() if b.is_floating_point())]
    sums[f"{NONFINITE}weights"] = torch.stack([(~torch.isfinite(t)).any() for t in tensors]).any().float()
    # The epoch's one host round trip: sum the device meters over processes and read them.
    counters = done.counters if done.counters is not None else torch.zeros(0, device=runtime.device)
    totals = torch.cat([torch.stack(list(sums.values())), counters.float(), counters.new_full((1,), float(done.seen))])
    D.all_reduce_sum(totals)
    values = totals.tolist()
    n = values[-1]
    health = {k.removeprefix(NONFINITE): v for k, v in zip(sums, values) if k.startswith(NONFINITE)}
    terms = [k for k, v in health.items() if k not in ("steps", "weights") and v > 0]
    if terms or health["weights"] > 0:
        raise DivergedError(_diverged(epoch, terms, health, runtime.dist.world, kept_epoch))
    result = {f"train/{k}": v / n for k, v in zip(sums, values) if not k.startswith(NONFINITE)}
    counts = values[len(sums) : len(sums) + len(counters)]
    result.update({f"train/{k}": v for k, v in task.train_metrics(counts, n, parts.head_names).items()})
    result["images_per_s"] = n / (time.perf_counter() - start)
    return result, done.last_lr


def _diverged(epoch: int, terms: list[str], health: dict[str, float], world: int, kept_epoch: int) -> str:
    step = int(health.get("steps", 0) // world) + 1
    kept = f"last.pt keeps epoch {kept_epoch}" if kept_epoch else "no epoch had finished"
    shown = ", ".join(terms[:4]) + (f" and {len(terms) - 4} more" if len(terms) > 4 else "")
    where = (
        f"the loss became non-finite in epoch {epoch + 1} at step {step} ({shown})"
        if terms
        else f"the weights became non-finite in epoch {epoch + 1} (the loss stayed finite)"
    )
    return f"{where}; the run stops ({kept}): lower optim.lr or check the data"
