"""The plots a user opens: a head keeps its colour, a kind of series its line style; the chosen checkpoint and the
test results are marked; every logged loss term, the validation loss and the mimicking pairs are drawn."""

from __future__ import annotations

import matplotlib
import pytest
from helpers import SMOKE

from dhm.config import load_config
from dhm.engine import build_trainer
from dhm.engine.plots import plot_history
from dhm.tasks import get_task

matplotlib.use("Agg")


@pytest.fixture
def figures(monkeypatch):
    """Every figure plot_history saves, by file name (the PNGs are written as well)."""
    from matplotlib.figure import Figure

    saved = {}
    original = Figure.savefig

    def keep(fig, path, *args, **kwargs):
        saved[str(path).rsplit("/", 1)[-1]] = fig
        return original(fig, path, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", keep)
    return saved


def _lines(ax) -> dict[str, object]:
    lines = {line.get_label(): line for line in ax.get_lines() if not line.get_label().startswith("_")}
    labels = [line.get_label() for line in ax.get_lines() if not line.get_label().startswith("_")]
    assert len(labels) == len(set(labels)), f"a series drawn twice: {labels}"
    return lines


def test_a_classification_runs_plots(tmp_path, figures):
    cfg = load_config("smoke", [*SMOKE, "train.epochs=3", "loss.mode=dhm", f"train.out_dir={tmp_path}"])
    summary = build_trainer(cfg).fit()
    best = summary["best_epoch"]
    acc = _lines(figures["accuracy.png"].axes[0])
    for head in ("main", "head1", "head2"):  # one colour per head, validation solid, training batches dashed
        val, train = acc[f"{head} val"], acc[f"{head} train"]
        assert val.get_linestyle() == "-" and train.get_linestyle() == "--" and val.get_color() == train.get_color()
    assert len({acc[f"{h} val"].get_color() for h in ("main", "head1", "head2")}) == 3
    assert acc["ensemble val"].get_color() == "black" and "train" not in acc  # no unnamed duplicate of main
    assert list(acc[f"best.pt: epoch {best}"].get_xdata()) == [best, best]
    test = [label for label in acc if label.startswith("test, best.pt")]
    assert test and test[0].endswith(f"{summary['test_acc1']:.2f}")
    loss, mimic = figures["loss.png"].axes
    terms = _lines(loss)
    assert {"main train ce", "head1 train ce", "head2 train ce", "train total", "val loss (main)"} <= set(terms)
    pairs = {label for label in _lines(mimic) if "->" in label}
    assert len(pairs) == 6 and "main -> head1" in pairs and "sum (unweighted)" in _lines(mimic)
    assert all((tmp_path / name).stat().st_size > 10_000 for name in ("loss.png", "accuracy.png", "lr.png"))


def test_a_reid_runs_plots_every_term_and_the_chosen_epoch(tmp_path, figures):
    """A re-ID history (the record keys of the retrieval task): triplet and center terms per head, mAP and
    rank-1 per head, best.pt's epoch and its test mAP against the last epoch's."""
    history = []
    for epoch in range(1, 5):
        record = {"epoch": epoch, "lr": 0.1 / epoch, "train/loss": 9.0 / epoch, "train/kl": 0.5, "train/id_acc": 50.0}
        for head in ("main", "head1"):
            record |= {f"train/ce/{head}": 3.0 / epoch, f"train/triplet/{head}": 0.3, f"train/center/{head}": 40.0}
            record |= {f"val/mAP/{head}": 10.0 + epoch, f"val/rank1/{head}": 20.0 + epoch}
        record |= {"train/kl/main->head1": 0.2, "train/kl/head1->main": 0.3, "val/mAP/concat": 12.0}
        history.append(record)
    task = get_task("retrieval")
    plot_history(history, tmp_path, task.panels, best_epoch=2, reports={"mAP/main": (14.5, 13.0)})
    terms = _lines(figures["loss.png"].axes[0])
    for head in ("main", "head1"):
        assert {f"{head} train ce", f"{head} train triplet", f"{head} train center"} <= set(terms)
    assert figures["loss.png"].axes[0].get_yscale() == "log"  # center 40 beside triplet 0.3 and kl 0.2: decades
    ret = _lines(figures["retrieval.png"].axes[0])
    assert ret["main val mAP"].get_linestyle() == "-" and ret["main val rank-1"].get_linestyle() == "--"
    assert list(ret["best.pt: epoch 2"].get_xdata()) == [2, 2]
    assert list(ret["test, best.pt: 14.50"].get_xdata()) == [2] and list(
        ret["test, last epoch: 13.00"].get_xdata()
    ) == [4]
    assert (tmp_path / "retrieval.png").stat().st_size > 10_000
