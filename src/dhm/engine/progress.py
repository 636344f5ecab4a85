"""Progress lines for logs: when output is not a terminal (no progress bar), a line at most every
``train.log_every_s`` seconds with the step, the images/s and the time left. Host-side counts only: printing never
waits for the device (on a GPU the count is of steps queued, which runs a few steps ahead of the kernels)."""

from __future__ import annotations

import time


def _clock(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return (
        f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
        if seconds >= 3600
        else f"{seconds // 60}:{seconds % 60:02d}"
    )


class LogProgress:
    """``update(done)`` after each unit of work; prints ``what: done/total, N images/s, ETA m:ss``."""

    def __init__(self, what: str, total: int, images_per_unit: int, interval: float) -> None:
        self.what, self.total, self.images, self.interval = what, total, images_per_unit, interval
        self.start = self.last = time.perf_counter()

    def update(self, done: int) -> None:
        now = time.perf_counter()
        if now - self.last < self.interval and done < self.total:
            return
        if done >= self.total and self.interval > 0:
            return  # the epoch line follows: no line for the end itself
        self.last = now
        elapsed = max(now - self.start, 1e-9)
        rate = done * self.images / elapsed
        eta = (self.total - done) * elapsed / max(done, 1)
        print(f"  {self.what}: {done}/{self.total}, {rate:.0f} images/s, ETA {_clock(eta)}", flush=True)


class Display:
    """How a run shows its progress: a tqdm bar per epoch on a terminal, progress lines in a log, nothing on other
    ranks or with ``train.progress=false``."""

    def __init__(self, enabled: bool, epochs: int, log_every_s: float) -> None:
        self.enabled, self.epochs, self.log_every_s = enabled, epochs, log_every_s

    def bar(self, epoch: int, steps: int):
        """A tqdm bar for one epoch, or ``None`` (no terminal: a log gets one line per epoch, not bar frames)."""
        import sys

        if not (self.enabled and sys.stderr.isatty()):
            return None
        from tqdm import tqdm

        return tqdm(total=steps, desc=f"epoch {epoch + 1}/{self.epochs}", leave=False, dynamic_ncols=True)

    def log(self, what: str, total: int, images: int) -> LogProgress | None:
        """Progress lines for a log file (output not a terminal), or ``None``."""
        return LogProgress(what, total, images, self.log_every_s) if self.enabled else None
