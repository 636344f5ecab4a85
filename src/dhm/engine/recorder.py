"""What a run writes for people and programs: metrics.jsonl / metrics.csv (rewritten atomically from the run's
history, so a resumed run never duplicates an epoch), TensorBoard when installed."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class Recorder:
    """Rank-0 metrics writer for one run directory."""

    def __init__(self, run_dir: Path, tensorboard: bool = True) -> None:
        self.run_dir = run_dir
        self.tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is optional
                SummaryWriter = None
            if SummaryWriter is not None:
                self.tb = SummaryWriter(str(run_dir / "tensorboard"))

    def write(self, history: list[dict[str, Any]]) -> None:
        """Rewrite metrics.jsonl and metrics.csv from the whole history; log the newest epoch to TensorBoard."""
        _write_text(self.run_dir / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in history))
        columns: list[str] = []
        for record in history:
            columns += [k for k in record if k not in columns]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns)
        writer.writeheader()
        writer.writerows(history)
        _write_text(self.run_dir / "metrics.csv", buffer.getvalue())
        if self.tb is not None and history:
            last = history[-1]
            for key, value in last.items():
                if key != "epoch" and isinstance(value, (int, float)):
                    self.tb.add_scalar(key, value, last["epoch"])
            self.tb.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
