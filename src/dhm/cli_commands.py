"""The ``dhm`` subcommands: each a thin call of a library function (the parser is :mod:`dhm.cli`)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from .errors import DHMError

#: The least value of each integer option of the commands (``--steps 0`` would time nothing, ``--classes 0``
#: would build a model with no outputs).
OPTION_MINIMA = {"classes": 1, "batch": 1, "steps": 1, "warmup": 0, "input_size": 1, "top_k": 1, "jobs": 1}


def check_options(ns: argparse.Namespace) -> None:
    """DHMError naming the first integer option below its least value."""
    for attr, low in OPTION_MINIMA.items():
        value = getattr(ns, attr, None)
        if isinstance(value, int) and not isinstance(value, bool) and value < low:
            raise DHMError(f"--{attr.replace('_', '-')} must be >= {low}, got {value}")


def _split_recipe(args: Sequence[str]) -> tuple[str, list[str]]:
    """``[RECIPE] [key=value ...]``: the recipe is optional (default ``demo``)."""
    args = list(args)
    if args and "=" not in args[0]:
        return args[0], args[1:]
    return "demo", args


def cmd_train(ns: argparse.Namespace) -> int:
    from .config import load_config
    from .engine import train

    recipe, overrides = _split_recipe(ns.args)
    cfg = load_config(recipe, overrides)
    if _rank() == 0:
        _short_run_hint(recipe, cfg)
    summary = train(cfg)
    if summary.get("world_size", 1) == 1 or _rank() == 0:
        print(summary["run_dir"])
    return 0


def _short_run_hint(recipe: str | None, cfg) -> None:
    """A paper-length schedule cut to a tenth or less rarely learns (lr 0.1 for a few dozen steps): say so, and
    what to run instead, before the run starts."""
    from .config import load_config

    if recipe is None:
        return
    full = load_config(recipe).train.epochs
    if full >= 100 and cfg.train.epochs * 10 <= full:
        print(
            f"note: {recipe} is a {full}-epoch schedule; cut to {cfg.train.epochs} epoch(s) it may learn nothing "
            "(its milestones scale along, its lr does not). For a short run lower optim.lr and set "
            "optim.schedule=cosine, or start from cifar10-jpeg-quick (README: Short runs)",
            flush=True,
        )


def _rank() -> int:
    import os

    return int(os.environ.get("RANK", "0"))


def cmd_eval(ns: argparse.Namespace) -> int:
    from .engine import evaluate_checkpoint

    options: dict = {k: True for k in ("flip", "rerank") if getattr(ns, k)}
    if ns.rank_images:
        options["rank_images"] = ns.rank_images
    report = evaluate_checkpoint(ns.checkpoint, ns.overrides, heads=ns.heads, options=options)
    if ns.heads and report.deployed:
        print(
            f"note: {ns.checkpoint} holds the deployed backbone only (its branches were stripped), so only the main "
            "head is shown; --heads shows every head of best.pt or last.pt"
        )
    for name, result in report.splits.items():
        print(f"{name}: {report.task.describe(result)}")
    if ns.rank_images:
        print(f"ranked queries drawn: {ns.rank_images}/<split>/worst.png and sample.png")
    return 0


def cmd_predict(ns: argparse.Namespace) -> int:
    from .predict import load_deployed, load_images, predict

    deployed = load_deployed(ns.checkpoint)
    files, images = load_images(ns.images, deployed.input_size)
    for path, top in zip(files, predict(deployed, images, ns.top_k)):
        print(f"{path}: " + "  ".join(f"{name} {100 * p:.1f}%" for name, p in top))
    return 0


def cmd_export(ns: argparse.Namespace) -> int:
    from .export import export

    print(export(ns.checkpoint, ns.format, ns.output))
    return 0


def cmd_models(ns: argparse.Namespace) -> int:
    import difflib

    from .models import list_models, paper_branches

    names = list_models(ns.pattern)
    if not names:
        every = list_models()
        close = difflib.get_close_matches(ns.pattern.strip("*"), every, n=3, cutoff=0.4)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        near = [n for n in every if ns.pattern.strip("*").lower() in n.lower()]
        if near:
            hint = f"; the pattern is a glob over whole names: try '*{ns.pattern.strip('*')}*' ({', '.join(near[:4])})"
        raise DHMError(f"no model matches {ns.pattern!r}{hint} (`dhm models` lists them all)")
    for name in names:
        layout = "; ".join(
            f"{s.fork}->{list(s.depths)}" + (f" x{s.width:g}" if s.width != 1.0 else "") for s in paper_branches(name)
        )
        print(f"{name:22s} paper branches: {layout}")
    if ns.pattern == "*":
        print("also torchvision:<name> and timm:<name> (optional libraries); `dhm inspect MODEL` shows the stages")
    return 0


def cmd_import_official(ns: argparse.Namespace) -> int:
    from pathlib import Path

    from .official import import_official

    output = ns.output or str(Path(ns.checkpoint).with_name(Path(ns.checkpoint).name.split(".")[0] + "_dhm.pt"))
    mean, std = (_floats(f"--{k}", getattr(ns, k)) for k in ("mean", "std"))
    print(import_official(ns.checkpoint, ns.model, output, ns.classes, mean, std))
    return 0


def _floats(option: str, text: str | None) -> list[float] | None:
    if not text:
        return None
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise DHMError(f"{option} takes comma-separated numbers (one per channel), got {text!r}") from None


def cmd_inspect(ns: argparse.Namespace) -> int:
    from .model_report import format_report, inspect_model

    print(format_report(inspect_model(ns.model, ns.specs, ns.classes, ns.input_size)))
    return 0


def cmd_methods(ns: argparse.Namespace) -> int:
    from .config import load_config
    from .engine.build import term_specs
    from .methods import METHODS, list_methods
    from .tasks import TASKS

    print(f"{'method':16s} {'layout':18s} {'supervised':10s} {'step':11s} {'tasks':26s} terms")
    for name in list_methods(aliases=True):
        method = METHODS.get(name)
        cfg = load_config(None, [f"loss.mode={name}", f"train.task={method.tasks[0]}"])
        terms = " + ".join(spec.term for spec in term_specs(cfg))
        layout = "|".join(method.accepts()) if method.layout == "none" else method.layout
        step = method.step(cfg.loss.options)
        tasks = ", ".join(method.tasks)
        print(f"{name:16s} {layout:18s} {method.supervise:10s} {step:11s} {tasks:26s} {terms}")
        print(f"{'':16s} {method.doc}")
    print(f"tasks (train.task): {', '.join(TASKS.list())}; `dhm config --keys loss.mode=NAME` lists a method's options")
    return 0


def cmd_recipes(ns: argparse.Namespace) -> int:
    from .config.recipe_files import RECIPES_DIR, list_recipes

    for name in list_recipes():
        first = (RECIPES_DIR / f"{name}.yaml").read_text().splitlines()[0]
        print(f"{name:36s} {first.lstrip('# ').strip()}")
    print("a setup recipe also takes its method in the name: cifar100/resnet32_ce = cifar100/resnet32 loss.mode=ce")
    return 0


def cmd_config(ns: argparse.Namespace) -> int:
    from .config import dump_config, load_config

    recipe, overrides = _split_recipe([ns.recipe, *ns.overrides])
    if ns.keys:
        from .config.keys import describe_keys

        rows = describe_keys(load_config(recipe, overrides))
        width = max(len(r.key) for r in rows)
        for r in rows:
            print(f"{r.key:<{width}}  {r.type:<18} {r.default:<14} {r.comment}".rstrip())
        return 0
    print(dump_config(load_config(recipe, overrides)), end="")
    return 0


def _csv(text: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.split(",") if t.strip())


def cmd_bench(ns: argparse.Namespace) -> int:
    from .bench import run_bench, save, to_markdown
    from .engine.compiling import resolve_compile

    compile_options = tuple(resolve_compile(c) or False for c in _csv(ns.compile))
    best = None
    if ns.best:
        precision, fmt, compiled = _csv(ns.best)
        best = (precision, fmt, resolve_compile(compiled) or False)
    result = run_bench(
        ns.model,
        ns.classes,
        ns.batch,
        _csv(ns.suite),
        _csv(ns.modes),
        _csv(ns.precisions),
        _csv(ns.formats),
        compile_options,
        _ints("--batches", ns.batches),
        ns.steps,
        ns.warmup,
        ns.device,
        best,
        engine=not ns.no_engine,
    )
    save(result, ns.json, ns.markdown)
    print(to_markdown(result))
    return 0


def _ints(option: str, text: str) -> tuple[int, ...]:
    """A comma-separated list of positive integers, or one line saying what is wrong."""
    try:
        values = tuple(int(v) for v in _csv(text))
    except ValueError:
        raise DHMError(f"{option} takes comma-separated positive integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise DHMError(f"{option} takes comma-separated positive integers, got {text!r}")
    return values


def cmd_compare(ns: argparse.Namespace) -> int:
    from .compare import run_compare, to_markdown

    result = run_compare(
        ns.recipe, ns.seeds, _csv(ns.modes), ns.overrides, ns.out, jobs=ns.jobs, train_runs=not ns.no_train
    )
    print(to_markdown(result))
    print(result["root"])
    return 0
