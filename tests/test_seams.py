"""The engine's seams: a task, a method and a dataset split registered from outside dhm train through the engine
unchanged (best.pt chosen by the task's own metric on its own split), and the layers import downward only."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import dhm
from dhm.config import load_config
from dhm.engine import build_trainer
from dhm.tasks import TASKS, Task

SRC = Path(__file__).resolve().parents[1] / "src" / "dhm"


class MeanNLL(Task):
    """A toy task: the main head's mean negative log-likelihood (lower is better) on a split named ``holdout``."""

    name = "toy-nll"
    primary = "nll/main"
    minimize = frozenset({"nll"})
    report_splits = ("holdout",)

    @torch.no_grad()
    def evaluate(self, model, loader, ctx):
        inner = dhm.branches.unwrap(model)
        was_training = inner.training
        inner.eval()
        total = torch.zeros((), dtype=torch.float64)
        count = 0
        for x, y in loader:
            total += F.cross_entropy(inner(x).float(), y, reduction="sum").double()
            count += len(y)
        inner.train(was_training)
        return {"nll/main": total.item() / count}


def _register():
    if "toy-nll" not in TASKS:
        TASKS.register("toy-nll")(MeanNLL())
    if "toy-main-to-head1" not in dhm.METHODS:
        dhm.METHODS.register("toy-main-to-head1")(
            dhm.Method(
                lambda loss: [dhm.TermSpec("pair_kl", {"graph": {"main->head1": 1.0}, "temperature": 2.0})],
                supervise="main",
                tasks=("classification", "toy-nll"),
                doc="the task's supervision of the main head, KL from the main head to head1 only",
            )
        )
    if "toy-holdout" not in dhm.data.DATASETS:
        from dhm.data.small import SyntheticOptions

        @dhm.data.register_dataset("toy-holdout", options=SyntheticOptions)  # the synthetic reader's options
        def toy_holdout(cfg):
            bundle = dhm.data.DATASETS.get("synthetic")(cfg)
            return dhm.data.Bundle(bundle.train, None, bundle.classes, bundle.channels, more={"holdout": bundle.test})


def test_toy_task_and_method_train_through_the_engine(tmp_path):
    _register()
    overrides = [
        "data.name=toy-holdout",
        "data.options.train_size=256",
        "data.options.test_size=64",
        "data.val_size=64",
        "data.batch_size=32",
        "train.epochs=3",
        "train.progress=false",
        "train.task=toy-nll",
        "loss.mode=toy-main-to-head1",
        f"train.out_dir={tmp_path}",
    ]
    trainer = build_trainer(load_config("smoke", overrides))
    loss = trainer.loss_fn(trainer.model.train()(torch.randn(4, 3, 32, 32)), torch.tensor([0, 1, 2, 3]))
    assert {k for k in loss if k.startswith("kl/")} == {"kl/main->head1"} and "ce/head1" not in loss
    summary = trainer.fit()
    history = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    nll = [r["val/nll/main"] for r in history]
    assert summary["best_epoch"] == 1 + min(range(len(nll)), key=lambda e: (nll[e], -e))  # lowest wins, ties later
    assert set(summary["holdout"]) == {"nll/main"} and summary["holdout_last"]["nll/main"] > 0
    assert summary["task"] == "toy-nll" and summary["select"] == "val/nll/main"
    best = torch.load(tmp_path / "best.pt", weights_only=True)
    assert best["state"]["epoch"] == summary["best_epoch"]
    assert not any(k.startswith("train/acc1") for k in history[-1])  # the task counts nothing in training


def test_pair_graph_weights_only_the_pairs_it_names():
    heads = [torch.randn(8, 5, dtype=torch.float64, requires_grad=True) for _ in range(3)]
    y = torch.randint(0, 5, (8,))
    term = dhm.losses.PairKL({"main->head1": 1.0}, names=("main", "head1", "head2"))
    out: dict = {}
    value = term(heads, ["main", "head1", "head2"], y, out)
    p0, logp1 = F.softmax(heads[0], -1), F.log_softmax(heads[1], -1)
    smoothed = [(F.softmax(h, -1) + 1e-8) / (1 + 5e-8) for h in heads[:2]]
    direct = (smoothed[0] * (smoothed[0].log() - smoothed[1].log())).sum(-1).mean()
    torch.testing.assert_close(value, direct, rtol=1e-10, atol=1e-12)
    assert set(out) == {"kl", "kl_weight", "kl_weighted", "kl/main->head1"} and p0.shape == logp1.shape
    grads = torch.autograd.grad(value, heads, allow_unused=True)
    assert grads[0] is None or float(grads[0].abs().sum()) == 0.0  # the teacher is detached
    assert float(grads[1].abs().sum()) > 0 and (grads[2] is None or float(grads[2].abs().sum()) == 0.0)


LAYERS = {  # package -> the dhm packages it may import (docs/architecture.md)
    "base": set(),
    "methods": {"base"},
    "config": {"base", "methods"},
    "branches": {"base"},
    "models": {"base", "branches"},
    "losses": {"base"},
    "retrieval": {"base"},
    "data": {"base", "config"},
    "tasks": {"base", "branches", "retrieval"},
    "steps": {"base", "branches"},
    "builtins": {"base", "methods", "config", "branches", "models", "losses", "retrieval", "data", "tasks", "steps"},
    "deployed": {"base", "branches", "models", "data", "retrieval"},
    "engine": {
        "base",
        "methods",
        "config",
        "branches",
        "models",
        "losses",
        "retrieval",
        "data",
        "tasks",
        "deployed",
        "steps",
    },
}
BASE = {"errors", "registry", "version", "dynamic", "files", "memory", "options", "precision", "gather", "cpus"}
TOP = {
    "bench",
    "compare",
    "cli",
    "cli_commands",
    "jobs",
    "official",
    "model_report",
    "api_loss",
    "plugins",
    "__main__",
    "__init__",
}


def _package(module: str) -> str:
    first = module.split(".")[0]
    if first in BASE:
        return "base"
    if first in ("export", "predict", "gallery", "deploy_meta"):
        return "deployed"
    return "top" if first in TOP else first


def _imports(path: Path) -> set[str]:
    """The dhm modules a file imports (TYPE_CHECKING blocks and function-level imports included)."""
    parts = list(path.relative_to(SRC).with_suffix("").parts[:-1])  # the package the file is in
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = parts[: len(parts) - (node.level - 1)]
            if node.module:
                found.add(".".join([*base, node.module]))
            else:  # from . import a, b
                found |= {".".join([*base, alias.name]) for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("dhm."):
            found.add(node.module.removeprefix("dhm."))
    return {f for f in found if f}


def test_layers_import_downward_and_there_are_no_cycles():
    graph: dict[str, set[str]] = {}
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).with_suffix("")
        name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts) or "__init__"
        graph[name] = _imports(path)
        assert len(path.read_text().splitlines()) < 300, f"{path} has 300 lines or more"
    for module, targets in graph.items():
        own = _package(module)
        if own == "top":
            continue
        assert own in LAYERS, f"{module}: package {own} has no layer in docs/architecture.md"
        for target in targets:
            other = _package(target)
            assert other == own or other in LAYERS[own], f"{module} ({own}) imports {target} ({other})"
    # no cycle between modules
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in graph.get(node, ()):
            nxt = nxt if nxt in graph else nxt.rsplit(".", 1)[0]
            if nxt not in graph or nxt == node:
                continue
            if state.get(nxt) == 1:
                raise AssertionError(f"import cycle: {' -> '.join([*stack, node, nxt])}")
            if not state.get(nxt):
                visit(nxt, [*stack, node])
        state[node] = 2

    for module in graph:
        if not state.get(module):
            visit(module, [])


def test_nothing_outside_classification_names_its_metric():
    for path in SRC.rglob("*.py"):
        if path.name != "classification.py":
            assert "acc1" not in path.read_text(), f"{path} mentions the classification task's acc1"


@pytest.mark.parametrize("name", ["ce", "ls", "dsl", "dhm", "dhm-released", "dhm-rampup", "dhm-gentle"])
def test_every_method_is_a_compare_mode_and_a_loss_mode(name):
    from dhm.compare import mode_overrides

    base = load_config("smoke")
    cfg = load_config("smoke", mode_overrides(name, base))
    assert cfg.loss.mode == name and load_config("smoke", [f"loss.mode={name}"]).loss.mode == name
