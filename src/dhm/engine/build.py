"""From a config to the objects of a run: data splits and loaders, the model, the loss."""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from torch import nn

from ..branches import BranchSpec, strip
from ..branches.warm import seed_branches
from ..config.schema import Config
from ..cpus import choose_workers
from ..data import Bundle, build_dataset, build_loader, build_sampler, carve_validation, take_subset
from ..errors import ConfigError
from ..losses import TERMS, Objective, Term
from ..memory import check_fits, model_bytes
from ..methods import TermSpec, get_method
from ..models import create_model
from ..models.pretrained import load_pretrained
from ..registry import RegistryError
from ..tasks import Task, get_task
from .dist import DistInfo


def model_spec(cfg: Config, num_classes: int, in_channels: int) -> dict[str, Any]:
    """Everything ``create_model`` needs to rebuild the plain backbone (stored in deploy exports)."""
    kwargs = dict(cfg.model.options)
    if cfg.model.dropout is not None:
        kwargs["dropout"] = cfg.model.dropout
    if cfg.model.widths is not None:
        kwargs["widths"] = tuple(cfg.model.widths)
    if cfg.model.last_stride is not None:
        kwargs["last_stride"] = cfg.model.last_stride
    if cfg.model.neck != "none":
        kwargs["neck"] = cfg.model.neck
    spec = {"name": cfg.model.name, "num_classes": num_classes, "in_channels": in_channels, "kwargs": kwargs}
    if cfg.model.deploy != "main":  # a deployed network with branches (ONE's gated ensemble): how to rebuild them
        spec.update(head=cfg.model.deploy, branches=cfg.model.branches)
    return spec


def build_model(cfg: Config, num_classes: int, in_channels: int, branches: Any = None) -> nn.Module:
    """The model of ``cfg``: the backbone with the branch layout of ``model.branches`` (resolved with the method:
    ``none`` for a method on the plain backbone); built to return pooled features too when a term of the method
    or of the task's supervision reads them."""
    spec = model_spec(cfg, num_classes, in_channels)
    if branches is None:
        branches = cfg.model.branches
    features = "features" in method_needs(cfg)
    if isinstance(branches, list):
        try:
            branches = [BranchSpec(**b) for b in branches]
        except TypeError as exc:
            raise ConfigError(f"model.branches: {exc}") from None

    def build() -> nn.Module:
        return create_model(
            spec["name"],
            num_classes=num_classes,
            branches=branches,
            dynamic_fork=cfg.model.dynamic_fork,
            features=features,
            in_channels=in_channels,
            **spec["kwargs"],
        )

    try:
        nbytes = model_bytes(build)
        if nbytes is not None:  # weights, gradients and the optimizer's state: about 4x the parameters
            check_fits(4 * nbytes, f"model {spec['name']} ({nbytes / 4e6:,.0f} M values)", "reduce model.widths")
        model = build()
    except RegistryError as exc:
        raise ConfigError(f"model.name: {exc}") from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"cannot build model {spec['name']!r}: {exc}") from None
    if cfg.model.pretrained_branches not in ("copy", "random"):
        raise ConfigError(f"model.pretrained_branches must be copy or random, got {cfg.model.pretrained_branches!r}")
    if cfg.model.pretrained_branches != "copy" and not cfg.model.pretrained:
        raise ConfigError("model.pretrained_branches says how branches start from model.pretrained, which is not set")
    if cfg.model.pretrained:
        report = load_pretrained(strip(model), cfg.model.pretrained)
        copied = seed_branches(model, report.loaded) if cfg.model.pretrained_branches == "copy" else []
        if os.environ.get("RANK", "0") == "0":
            print(report.line(cfg.model.pretrained), flush=True)
            if copied:
                print(f"model.pretrained_branches=copy: {'; '.join(copied)}", flush=True)
            elif branches not in (None, "none") and cfg.model.pretrained_branches == "random":
                print("model.pretrained_branches=random: the branches start as initialised", flush=True)
    return model


def term_specs(cfg: Config) -> list[TermSpec]:
    """The loss terms of a run: the task's supervision of the heads the method supervises (none where the method
    replaces it), then the method's own terms."""
    method = get_method(cfg.loss.mode)
    supervision = [] if method.supervise == "none" else get_task(cfg.train.task).supervision(cfg.loss, method.supervise)
    return [*(TermSpec(term, options) for term, options in supervision), *method.terms(cfg.loss)]


def method_step(cfg: Config) -> str:
    """The step kind the run's method trains with (``joint`` for most)."""
    return get_method(cfg.loss.mode).step(cfg.loss.options)


def method_needs(cfg: Config) -> set[str]:
    """The model outputs beyond logits that the run's loss terms read (``features``), so the model is built
    to return them."""
    return {need for spec in term_specs(cfg) for need in TERMS.get(spec.term).needs}


def build_loss(
    cfg: Config,
    head_names: tuple[str, ...] | None,
    num_classes: int | None = None,
    dims: tuple[int, ...] = (),
    num_samples: int | None = None,
) -> Objective:
    """The objective of the run's method (``loss.mode``): its term specs as loss terms over ``head_names``; terms
    with parameters or state of their own are sized by ``num_classes``, the heads' embedding sizes ``dims``, the
    training split's ``num_samples`` (a per-sample memory) and ``train.epochs``."""
    try:
        specs = term_specs(cfg)
        sizes = {"num_classes": num_classes, "dims": dims, "num_samples": num_samples, "epochs": cfg.train.epochs}
        return Objective([make_term(spec, head_names, sizes) for spec in specs], head_names)
    except (ValueError, KeyError) as exc:
        raise ConfigError(f"loss: {exc}") from None


def make_term(spec: TermSpec, head_names: tuple[str, ...] | None, sizes: dict[str, Any] | None = None) -> Term:
    """The loss term of one method term spec; terms that resolve their heads once are given the head names, terms
    with parameters the model's sizes (``num_classes``, ``dims``)."""
    cls = TERMS.get(spec.term)
    options = dict(spec.options)
    wanted = inspect.signature(cls).parameters
    if "names" in wanted and head_names is not None:
        options.setdefault("names", head_names)
    for key, value in (sizes or {}).items():
        if key in wanted:
            if not value:
                raise ValueError(f"the {spec.term} term needs the run's {key}, which this run does not know")
            options.setdefault(key, value)
    return cls(**options)


@dataclass
class RunData:
    """A run's data: the dataset's facts (``bundle``), the training loader and the evaluation loaders by split
    name, and the class count."""

    bundle: Bundle
    train: Any
    splits: dict[str, Any]
    num_classes: int

    @property
    def val(self) -> Any | None:
        return self.splits.get("val")

    @property
    def test(self) -> Any | None:
        return self.splits.get("test")


def build_data(cfg: Config, dist: DistInfo, channels_last: bool = False, task: Task | None = None) -> RunData:
    """Read the dataset, carve the validation split (``data.val_by``, default the task's way), let the task check
    the labels, and build the training loader (its order drawn by ``data.sampler``, default the task's) and one
    evaluation loader per split (``val`` and every named split of the dataset but ``train``)."""
    task = task or get_task("classification")
    try:
        bundle = build_dataset(cfg.data)
    except RegistryError as exc:
        raise ConfigError(f"data.name: {exc}") from None
    with _config_key("data.val_by"):
        by = cfg.data.val_by or task.carve
        train_src, val_src = carve_validation(by, bundle.train, cfg.data.val_size, cfg.data.split_seed)
    train_src = take_subset(train_src, cfg.data.train_subset, cfg.data.split_seed)
    with _config_key("data.sampler"):
        options = dataclasses.asdict(cfg.data.sampler_options)  # typed by the sampler (config/resolve.py)
        sampler = build_sampler(cfg.data.sampler or task.sampler, train_src.labels, **options)
    num_classes = cfg.model.num_classes or len(bundle.classes)
    for split, src in bundle.splits.items():
        task.check_labels(split, src.labels, num_classes)
    common = dict(
        augment=cfg.data.augment,
        pad=cfg.data.pad,
        mean=bundle.mean,
        std=bundle.std,
        device=dist.device,
        rank=dist.rank,
        world=dist.world,
        channels_last=channels_last,
        image_size=cfg.data.image_size,
        workers=choose_workers(cfg.data.workers),
    )
    evals = {"val": val_src, **{name: src for name, src in bundle.splits.items() if name != "train"}}
    task.check_splits(train_src, evals, bundle.separate_ids)  # refused before the first step
    try:
        train = build_loader(
            train_src,
            train=True,
            batch_size=cfg.data.batch_size,
            seed=cfg.train.seed,
            accum=cfg.train.accum_steps,
            sampler=sampler,
            **common,
        )
        splits = {
            name: build_loader(src, train=False, batch_size=cfg.data.eval_batch_size, **common) if src else None
            for name, src in evals.items()
        }
    except RegistryError as exc:
        raise ConfigError(f"data.augment: {exc}") from None
    return RunData(bundle, train, splits, num_classes)


@contextlib.contextmanager
def _config_key(key: str) -> Iterator[None]:
    """An unknown registry name under ``key`` as a ConfigError naming the key."""
    try:
        yield
    except RegistryError as exc:
        raise ConfigError(f"{key}: {exc}") from None
