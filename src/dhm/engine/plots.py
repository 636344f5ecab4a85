"""PNG plots of a run's history (matplotlib, no display): ``loss.png`` (every logged loss term per head, the total,
the validation loss, and the mimicking pairs in a panel of their own), the task's panels (accuracy per head for
classification, mAP and rank-1 per head for re-ID) and ``lr.png``. A head keeps one colour in every plot, a kind
of series (train / validation, one loss term or another) one line style; the epoch of the chosen checkpoint
(best.pt) is marked, and the task's test result of best.pt and of the last epoch where the run has one."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..tasks import PlotPanel

STYLES = ("-", "--", ":", "-.")
COMBINED = ("ensemble", "concat")  # the heads together: drawn in black


def _head_order(name: str) -> tuple[int, int, str]:
    if name == "main":
        return (0, 0, name)
    if name in COMBINED:
        return (2, 0, name)
    digits = re.sub(r"\D", "", name)
    return (1, int(digits) if digits else 0, name)


class _Palette:
    """One colour per head, in a fixed order (main, head1, head2, ..., then the combined heads in black)."""

    def __init__(self, heads: Sequence[str]) -> None:
        import matplotlib.pyplot as plt

        cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        ordinary = [h for h in sorted(set(heads), key=_head_order) if h not in COMBINED]
        self.colour = {h: cycle[i % len(cycle)] for i, h in enumerate(ordinary)}

    def __call__(self, head: str) -> str:
        return self.colour.get(head, "black")


def _split(key: str, prefixes: Sequence[str]) -> tuple[int, str] | None:
    """(which prefix, the head) of a record key, or None when no prefix names it per head."""
    for i, prefix in enumerate(prefixes):
        if key.startswith(prefix) and key != prefix.rstrip("/") and "->" not in key:
            return i, key[len(prefix) :]
    return None


def _loss_terms(keys: Sequence[str], panels: Sequence[PlotPanel]) -> list[str]:
    """The per-head loss terms logged (``train/<term>/<head>``: ce, triplet, center, ...): every per-head training
    series that no task panel draws as a metric, but the mimicking pairs (their own panel)."""
    metrics = {p.split("/")[1] for panel in panels for p in panel.prefixes if p.startswith("train/")}
    terms = {k.split("/")[1] for k in keys if k.startswith("train/") and k.count("/") == 2 and "->" not in k}
    return sorted(terms - metrics - {"kl"})


def plot_history(
    history: list[dict[str, Any]],
    out_dir: Path,
    panels: Sequence[PlotPanel] = (),
    best_epoch: int | None = None,
    reports: dict[str, tuple[float, float]] | None = None,
) -> list[Path]:
    """Write loss.png, one PNG per task panel (``panels``) and lr.png into ``out_dir``; returns the paths.
    ``best_epoch`` is the chosen checkpoint's epoch; ``reports`` maps a panel's ``report_key`` to the test value of
    (best.pt, the last epoch)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    epochs = [r["epoch"] for r in history]
    keys = sorted({k for r in history for k in r})
    terms = _loss_terms(keys, panels)
    heads = [
        k.split("/")[2] for k in keys if k.count("/") == 2 and "->" not in k and k.split("/")[0] in ("train", "val")
    ]
    colour = _Palette(heads)
    reports = reports or {}

    def series(key: str) -> list[float]:
        return [r.get(key, float("nan")) for r in history]

    def per_head(ax, prefixes: Sequence[str], names: Sequence[str]) -> None:
        found = [(key, _split(key, prefixes)) for key in keys]
        for key, where in sorted((kw for kw in found if kw[1]), key=lambda kw: (_head_order(kw[1][1]), kw[1][0])):
            kind, head = where
            label = f"{head} {names[kind]}"
            ax.plot(epochs, series(key), STYLES[kind % 4], color=colour(head), marker=".", markersize=4, label=label)

    def decorate(ax, title: str, ylabel: str, report: tuple[float, float] | None = None, log_scale=False) -> None:
        if best_epoch is not None and len(epochs) > 1:
            ax.axvline(best_epoch, color="grey", linestyle=":", linewidth=1.2, label=f"best.pt: epoch {best_epoch}")
        if report is not None and epochs:
            chosen = best_epoch or epochs[-1]
            same = chosen == epochs[-1]
            ax.plot([chosen], [report[0]], "*", color="black", markersize=11,
                    label=f"test, best.pt{' = last epoch' if same else ''}: {report[0]:.2f}")  # fmt: skip
            if not same:
                ax.plot([epochs[-1]], [report[1]], "P", color="dimgrey", markersize=8,
                        label=f"test, last epoch: {report[1]:.2f}")  # fmt: skip
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # no fractional epochs on short runs
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        if log_scale:  # a loss spanning decades (an early validation loss of 1,000 beside terms of 0.1)
            values = [y for line in ax.get_lines() for y in line.get_ydata() if isinstance(y, float) and y > 0]
            if values and max(values) > 100 * min(values):
                ax.set_yscale("log")
                ax.set_ylabel(f"{ylabel} (log scale)")
        handles = ax.get_legend_handles_labels()[0]
        if handles:
            ax.legend(fontsize=7, ncol=2 if len(handles) > 8 else 1)

    def save(fig, filename: str) -> Path:
        fig.tight_layout()
        fig.savefig(out_dir / filename, dpi=100)
        plt.close(fig)
        return out_dir / filename

    paths = []
    pairs = [k for k in keys if k.startswith("train/kl/") and "->" in k]
    fig, axes = plt.subplots(1, 2 if pairs else 1, figsize=(13 if pairs else 7, 4.5), squeeze=False)
    ax = axes[0][0]
    per_head(ax, [f"train/{t}/" for t in terms], [f"train {t}" for t in terms])
    for key, style, label in (("train/loss", "-", "train total"), ("val/loss", "--", "val loss (main)")):
        if key in keys:
            ax.plot(epochs, series(key), style, color="black", linewidth=2, label=label)
    if "train/kl_weighted" in keys:
        ax.plot(epochs, series("train/kl_weighted"), "-.", color="grey", label="train mimicking (weighted)")
    decorate(ax, "loss terms per head (train), total and validation loss", "loss", log_scale=True)
    if pairs:
        mimic = axes[0][1]
        teachers = sorted({k.removeprefix("train/kl/").split("->")[0] for k in pairs}, key=_head_order)
        for key in pairs:
            teacher, student = key.removeprefix("train/kl/").split("->")
            mimic.plot(epochs, series(key), STYLES[teachers.index(teacher) % 4], color=colour(student), marker=".",
                       markersize=4, label=f"{teacher} -> {student}")  # fmt: skip
        if "train/kl" in keys:
            mimic.plot(epochs, series("train/kl"), color="black", linewidth=2, label="sum (unweighted)")
        decorate(mimic, "mimicking per pair, teacher -> student (train; colour: the student)", "KL", log_scale=True)
    paths.append(save(fig, "loss.png"))
    for p in panels:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        per_head(ax, p.prefixes, p.names or p.prefixes)
        decorate(ax, p.title, p.ylabel, reports.get(p.report_key))
        paths.append(save(fig, p.filename))
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(epochs, series("lr"), color="black", marker=".", label="learning rate")
    decorate(ax, "learning rate (last step of each epoch)", "learning rate")
    if "train/kl_weight" in keys:  # the mimicking weight (ramp-up) on its own axis, one legend for both
        twin = ax.twinx()
        twin.plot(epochs, series("train/kl_weight"), "--", color="tab:purple", label="mimicking weight (right axis)")
        twin.set_ylabel("mimicking weight")
        handles, labels = (a + b for a, b in zip(ax.get_legend_handles_labels(), twin.get_legend_handles_labels()))
        ax.legend(handles, labels, fontsize=7, loc="center left")
    paths.append(save(fig, "lr.png"))
    return paths
