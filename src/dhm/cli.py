"""The ``dhm`` command line: thin argparse subcommands over library calls. Bad input -> one line, exit code 2."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence

from .cli_commands import (
    check_options,
    cmd_bench,
    cmd_compare,
    cmd_config,
    cmd_eval,
    cmd_export,
    cmd_import_official,
    cmd_inspect,
    cmd_methods,
    cmd_models,
    cmd_predict,
    cmd_recipes,
    cmd_train,
)
from .errors import DHMError, Terminated
from .gallery.cli import add_commands as add_gallery_commands
from .memory import allocation_message, is_allocation_failure
from .methods import list_methods
from .plugins import load_plugins
from .registry import RegistryError
from .version import __version__


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Shows an option's default unless the help already names it or there is none worth showing."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default in (None, False, argparse.SUPPRESS) or "default" in text.lower() or not action.option_strings:
            return text
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dhm",
        description="Dynamic Hierarchical Mimicking: train, evaluate, predict, export, compare, measure.",
        formatter_class=_Help,
    )
    parser.add_argument("--version", action="version", version=f"dhm {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add = sub.add_parser

    def add_parser(name: str, **kwargs) -> argparse.ArgumentParser:  # every subcommand shows its defaults
        return _add(name, formatter_class=_Help, **kwargs)

    sub.add_parser = add_parser

    p = sub.add_parser(
        "train",
        help="train a recipe (default: demo)",
        description="Train RECIPE (a bundled name or a YAML path; default demo) with dotted overrides, "
        "e.g. `dhm train demo train.epochs=5 optim.lr=0.05`. Prints the run directory last. "
        "`dhm config --keys` lists every key with its type, default and meaning; `dhm recipes` the recipes.",
    )
    p.add_argument(
        "args", nargs="*", metavar="[RECIPE] [key=value ...]", help="a recipe (`dhm recipes`) and config overrides"
    )
    p.set_defaults(fn=cmd_train)

    p = sub.add_parser(
        "eval",
        help="evaluate a checkpoint on its validation and test splits",
        description="The task's metrics (top-1 accuracy; re-ID: mAP, rank-1/5/10, mINP) on the run's validation and "
        "test splits: best.pt / last.pt (every head with --heads), deploy.pt and pt/safetensors exports (main head).",
    )
    p.add_argument("checkpoint", help="best.pt, last.pt, deploy.pt or a pt/safetensors export")
    p.add_argument("--heads", action="store_true", help="every head and their ensemble, not only the main head")
    p.add_argument("--flip", action="store_true", help="re-ID: average each embedding with its mirrored image's")
    p.add_argument("--rerank", action="store_true", help="re-ID: k-reciprocal re-ranking (k1 20, k2 6, lambda 0.3)")
    p.add_argument("--rank-images", metavar="DIR", help="re-ID: draw the worst and a sample of queries' rankings")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. data.root=... for another data location")
    p.set_defaults(fn=cmd_eval)

    p = sub.add_parser(
        "predict",
        help="classify image files with a trained model",
        description="Top-k classes of every image (files or folders) with CHECKPOINT: best.pt, last.pt, "
        "deploy.pt or a pt/safetensors export. Uses the saved class names, normalisation and input size.",
    )
    p.add_argument("checkpoint", help="best.pt, last.pt, deploy.pt or a pt/safetensors export")
    p.add_argument("images", nargs="+", help="image files or folders (searched recursively)")
    p.add_argument("--top-k", type=int, default=5, help="classes shown per image (default 5)")
    p.set_defaults(fn=cmd_predict)

    add_gallery_commands(sub)

    p = sub.add_parser("export", help="export the branch-free backbone of a checkpoint")
    p.add_argument("checkpoint", help="a training checkpoint (best.pt, last.pt) or deploy.pt")
    p.add_argument(
        "--format", required=True, choices=["safetensors", "pt", "torchscript", "onnx"], help="the export format"
    )
    p.add_argument("--output", "-o", default=None, help="output file (default: next to the checkpoint)")
    p.set_defaults(fn=cmd_export)

    p = sub.add_parser(
        "bench",
        help="measure training and inference speed, memory and cost growth",
        description="Throughput (median of timed steps after warm-up) and memory of ce/dsl/dhm training "
        "steps across precision, memory format and torch.compile; inference of the stripped "
        "model; step time against branches and batch size next to the FLOP ratio.",
    )
    p.add_argument("--model", default="cifar_resnet32", help="a registered model (`dhm models`)")
    p.add_argument("--classes", type=int, default=100, help="number of classes of the synthetic task")
    p.add_argument("--batch", type=int, default=128, help="batch size of the timed steps")
    p.add_argument("--suite", default="speed,inference,growth", help="any of speed, inference, growth")
    p.add_argument("--modes", default="ce,dsl,dhm", help="comma-separated: ce, dsl, dhm")
    p.add_argument("--precisions", default="fp32,bf16", help="comma-separated: fp32, bf16, fp16")
    p.add_argument("--formats", default="nchw,channels_last", help="comma-separated memory formats")
    p.add_argument(
        "--compile",
        default="off,on",
        help="comma-separated: off, on (default mode) or a torch.compile mode such as reduce-overhead; default off,on",
    )
    p.add_argument("--no-engine", action="store_true", help="skip the engine-against-bare-step rows")
    p.add_argument("--batches", default="32,64,128,256", help="batch sizes of the growth suite")
    p.add_argument(
        "--best",
        default="",
        help="precision,format,compile for the inference/growth suites, "
        "e.g. bf16,channels_last,off (default fp32,nchw,off)",
    )
    p.add_argument("--steps", type=int, default=10, help="timed steps per setting (the median is reported)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (3 more when compiled)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--json", default=None, help="write the result as JSON here")
    p.add_argument("--markdown", default=None, help="write the markdown tables here")
    p.set_defaults(fn=cmd_bench)

    p = sub.add_parser(
        "compare",
        help="train every mode x seed of a recipe and tabulate mean +- std",
        description=f"Runs each mode (a method of `dhm methods`: {', '.join(list_methods())}) with each seed under "
        "RECIPE; finished runs are skipped, unfinished ones resumed.",
    )
    p.add_argument("recipe", help="a recipe name (`dhm recipes`) or a YAML path")
    p.add_argument("--seeds", default="3", help="a count (3 = seeds 0, 1, 2) or a list of seeds (0,4,7)")
    p.add_argument(
        "--modes",
        default="ce,dsl,dhm",
        help="comma-separated methods (listed above); a mode may add its own settings for a sweep: "
        "dhm-rampup+loss.rampup_epochs=15+loss.temperature=3",
    )
    p.add_argument("--out", default=None, help="folder of the runs (default runs/compare/<recipe>)")
    p.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="runs side by side, one process each (on a GPU through CUDA MPS when available)",
    )
    p.add_argument("--no-train", action="store_true", help="only tabulate the runs that are there")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides for every run")
    p.set_defaults(fn=cmd_compare)

    p = sub.add_parser("models", help="list registered models and their paper branch layouts")
    p.add_argument("pattern", nargs="?", default="*", help="a glob over the names, e.g. 'wrn*' or '*resnet3*'")
    p.set_defaults(fn=cmd_models)

    p = sub.add_parser(
        "inspect",
        help="show the stages dhm finds in a model, its branches and their cost",
        description="Stages (module, channels, reduction), branches with parameter counts, and the forward FLOP "
        "ratio of the branched model to the plain one. MODEL: a dhm model (`dhm models`), torchvision:<name> or "
        "timm:<name>. Branch specs: FORK or FORK:light (a stage index or module path), or a YAML mapping such as "
        "'{fork: 1, depths: [2], width: 2}'; default: the paper layout.",
    )
    p.add_argument("model", help="cifar_resnet32, torchvision:mobilenet_v2, timm:resnet50, ...")
    p.add_argument("specs", nargs="*", metavar="SPEC", help="branch specs (default: the paper layout)")
    p.add_argument("--classes", type=int, default=None, help="number of classes (default: the model's)")
    p.add_argument("--input-size", type=int, default=None, help="side of the probe image (default: the model's)")
    p.set_defaults(fn=cmd_inspect)

    p = sub.add_parser(
        "import-official",
        help="convert a checkpoint of the authors' DHM code into a dhm checkpoint",
        description="Read CHECKPOINT as written by the authors' training scripts (d-li14/DHM: a dict with "
        "'state_dict', keys prefixed 'module.') without unpickling code, load it into dhm's MODEL with the paper's "
        "branches, and write a dhm checkpoint; `dhm export OUT --format pt` then gives the plain backbone.",
    )
    p.add_argument("checkpoint", help="the authors' .pth.tar file")
    p.add_argument("--model", required=True, help="the dhm model with the same architecture (`dhm models`)")
    p.add_argument("--classes", type=int, default=None, help="number of classes (default: from fc.weight)")
    p.add_argument("--output", "-o", default=None, help="output file (default: <name>_dhm.pt beside the input)")
    p.add_argument(
        "--mean",
        default=None,
        help="normalisation mean per channel, e.g. 0.485,0.456,0.406 "
        "(default: the authors' CIFAR or ImageNet statistics)",
    )
    p.add_argument("--std", default=None, help="normalisation std per channel (default: as --mean)")
    p.set_defaults(fn=cmd_import_official)

    p = sub.add_parser(
        "methods",
        help="list the methods (loss.mode, dhm compare modes) and the tasks",
        description="Every method: its branch policy, its loss terms and what it is; then the tasks (train.task).",
    )
    p.set_defaults(fn=cmd_methods)

    p = sub.add_parser("recipes", help="list the bundled recipes")
    p.set_defaults(fn=cmd_recipes)

    p = sub.add_parser(
        "config",
        help="print the resolved config of a recipe with overrides, or every key (--keys)",
        description="Print RECIPE's resolved config (with key=value overrides), or with --keys every config key "
        "with its type, default and meaning, and the options of the method, task and dataset the config chooses "
        "(dhm config --keys loss.mode=dsn; dhm config --keys pku-reid).",
    )
    p.add_argument("--keys", action="store_true", help="list every config key: type, default, meaning; and options")
    p.add_argument("recipe", nargs="?", default="demo", help="a recipe name (`dhm recipes`) or a YAML path")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. optim.lr=0.05")
    p.set_defaults(fn=cmd_config)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``dhm`` console script and ``python -m dhm``."""
    parser = build_parser()
    ns, extra = parser.parse_known_args(argv)
    if ns.command is None:  # bare `dhm`: what it can do
        parser.print_help()
        return 0
    # key=value overrides may come after options (`dhm compare demo --seeds 3 train.epochs=5`)
    target = "args" if ns.command == "train" else "overrides"
    if extra and hasattr(ns, target) and all("=" in e and not e.startswith("-") for e in extra):
        setattr(ns, target, [*getattr(ns, target), *extra])
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if main_thread else None  # SIGTERM stops like Ctrl-C
    try:
        load_plugins()  # DHM_PLUGINS and the dhm.plugins entry points, once (children of compare --jobs too)
        check_options(ns)
        return ns.fn(ns)
    except (DHMError, RegistryError) as exc:
        print(f"dhm: error: {exc}", file=sys.stderr)
        return getattr(exc, "exit_code", 2)
    except (MemoryError, RuntimeError) as exc:  # an allocation that failed; any other RuntimeError is a bug: raised
        if not is_allocation_failure(exc):
            raise
        print(f"dhm: error: {allocation_message(exc)}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `dhm recipes | head`
        return 0
    except Terminated as exc:
        print(f"dhm: terminated (SIGTERM); {exc.args[0] if exc.args else KEPT}", file=sys.stderr)
        return 143
    except KeyboardInterrupt as exc:
        print(f"dhm: interrupted; {exc.args[0] if exc.args else KEPT}", file=sys.stderr)
        return 130
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)


KEPT = "a training run keeps its last finished epoch in last.pt (train.resume=auto continues it)"


def _terminate(signum, frame) -> None:
    raise Terminated


if __name__ == "__main__":
    sys.exit(main())
