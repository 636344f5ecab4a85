"""PNG plots of a run's history: the loss terms, the task's panels (accuracy per head for classification) and the
learning rate (matplotlib, no display)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..tasks import PlotPanel


def plot_history(history: list[dict[str, Any]], out_dir: Path, panels: Sequence[PlotPanel] = ()) -> list[Path]:
    """Write loss.png, one PNG per task panel (``panels``) and lr.png into ``out_dir``; returns the paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in history]
    keys = sorted({k for r in history for k in r})

    def series(key: str) -> list[float]:
        return [r.get(key, float("nan")) for r in history]

    from matplotlib.ticker import MaxNLocator

    panels = [
        (
            "loss.png",
            "loss per head (train)",
            "loss",
            [k for k in keys if k.startswith("train/ce/")] + ["train/kl", "train/loss"],
        ),
        *((p.filename, p.title, p.ylabel, [k for k in keys if k.startswith(p.prefixes)]) for p in panels),
        ("lr.png", "learning rate (last step of each epoch)", "learning rate", ["lr"]),
    ]
    paths = []
    for filename, title, ylabel, panel_keys in panels:
        fig, ax = plt.subplots(figsize=(6, 4))
        for key in panel_keys:
            if key in keys:
                ax.plot(epochs, series(key), marker="o", markersize=3, label=key)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # no fractional epochs on short runs
        ax.set_title(title)
        ax.grid(alpha=0.3)
        if len(panel_keys) > 1:
            ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out_dir / filename, dpi=100)
        plt.close(fig)
        paths.append(out_dir / filename)
    return paths
