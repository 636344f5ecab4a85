"""The typed configuration schema. Recipes are YAML diffs over these defaults (see ``config/io.py``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class ModelConfig:
    name: str = "cifar_resnet20"  # a registry name: `dhm models`
    num_classes: int | None = None  # default: the dataset's
    in_channels: int | None = None  # default: the dataset's (1 for digits and MNIST)
    branches: str | list[dict[str, Any]] = ""  # "" (the method's) | paper | none | peers:K | ... | [{fork, ...}]
    dynamic_fork: bool = False  # stochastic fork point (docs/method.md 4.2)
    dropout: float | None = None  # WRN dropout (paper recipe: 0.3)
    widths: list[int] | None = None  # CIFAR ResNet stage widths (default 16/32/64)
    options: dict[str, Any] = field(default_factory=dict)  # any other family keyword
    neck: str = "none"  # none | bnneck (re-ID: BatchNorm1d + bias-free classifier per head, eval returns embeddings)
    last_stride: int | None = None  # 1 keeps the ResNets' last stage at the previous resolution (re-ID); None = 2
    deploy: str = "main"  # what deploy.pt holds: main (the plain backbone) | gate (one: the gated ensemble)
    pretrained: str = ""  # a local torchvision/timm state_dict file loaded into the backbone (never downloaded)
    pretrained_branches: str = "copy"  # with model.pretrained: copy (branch stages from the stages they copy) | random


@dataclass
class LossConfig:
    mode: str = "dhm"  # the method (`dhm methods`): ce | ls | dsl | dhm | dhm-rampup | dhm-gentle | dml | ...
    alpha: float = 1.0  # weight of the mimicking term (DHM: every pair)
    temperature: float = 1.0  # T of the softened predictions
    t2: bool = True  # scale the mimicking term by T^2 (DHM, ONE, BYOT); dks and dml default to false
    detach: bool = True  # the teacher side of every mimicking pair gets no gradient
    eps: float = 1.0e-8  # probability smoothing before the log, as released (0 = exact)
    dynamic: str | None = None  # stochastic pair gradients: released | bernoulli(p)
    rampup_epochs: float = 0.0  # mimicking ramp-up period in epochs (0 = off, as released)
    rampup: str = "linear"  # linear | sigmoid
    rampup_per: str = "step"  # the ramp-up's weight is set every step | once per epoch (one, okddip: their authors')
    label_smoothing: float = 0.0  # on the supervised cross-entropy only (never on the mimicking targets)
    preset: str = ""  # "" | gentle (alpha 0.5, sigmoid ramp-up over half the run; RESULTS.md): sets those keys
    options: Any = field(default_factory=dict)  # the method's own options (`dhm config --keys loss.mode=M`)
    supervision: Any = field(default_factory=dict)  # the task's supervision options (retrieval: margin, center)


@dataclass
class DataConfig:
    name: str = "digits"  # digits | synthetic | mnist | cifar10 | cifar100 | imagefolder
    root: str = "data"  # where the files are (or are downloaded to)
    download: bool = False  # download cifar10/cifar100 from the official URL when missing (md5-checked)
    verify_md5: bool = True  # refuse a cifar tarball whose md5 is not the official one
    val_size: float = 0.1  # held-out validation split: a fraction (< 1), or a count (at most a quarter of the split)
    val_by: str = ""  # how validation is carved: image | identity ("" = the task's choice)
    split_seed: int = 0  # seed of the validation split (fixed across training seeds)
    train_subset: int = 0  # train on a seeded subset of this many images (0 = all), for quick comparisons
    batch_size: int = 128  # global batch per optimizer step, all processes and accumulation steps together
    sampler: str = ""  # training order: random | identity (P x K per batch) ("" = the task's choice)
    sampler_options: Any = field(default_factory=dict)  # the sampler's own options (identity: instances, K)
    eval_batch_size: int = 256  # batch per process for validation and test
    workers: int | str = "auto"  # DataLoader workers (decoding only) for folder datasets: auto (a core each, <= 4) | N
    augment: str = "cifar"  # cifar (pad crop+flip) | crop | flip | imagenet (resized crop+flip) | reid (+erase) | none
    image_size: int | list[int] | None = None  # resize to this side or [height, width] (re-ID); None = native
    pad: int | None = None  # pad-and-crop shift in pixels of data.augment (None = the preset's: 4, reid 10)
    in_memory: bool = False  # imagefolder: decode every image once into memory (small images such as CIFAR)
    options: Any = field(default_factory=dict)  # the reader's own options (`dhm config --keys data.name=NAME`)


@dataclass
class OptimConfig:
    name: str = "sgd"  # sgd | adam | adamw
    lr: float = 0.1  # for the global batch
    momentum: float = 0.9  # SGD momentum
    nesterov: bool = False  # Nesterov momentum
    weight_decay: float = 1.0e-4  # L2 weight decay on every parameter, as released
    schedule: str = "multistep"  # multistep | cosine | constant
    milestones: list[float] = field(default_factory=list)  # epochs where lr is multiplied by gamma
    gamma: float = 0.1  # multistep: lr factor at each milestone
    warmup_epochs: float = 0.0  # linear warm-up from 0 over this many epochs
    min_lr: float = 0.0  # cosine floor


@dataclass
class TrainConfig:
    epochs: int = 10  # training epochs (the lr schedule spans them)
    seed: int = 0  # seed of initialisation, data order, augmentation and dynamic draws
    deterministic: bool = False  # deterministic algorithms (slower); resume then reproduces weights exactly
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: str = "auto"  # auto (bf16 where native) | off | bf16 | fp16 (fp16 uses a grad scaler)
    channels_last: bool | str = "auto"  # auto (CUDA and oneDNN CPUs) | true | false
    compile: bool | str = "auto"  # torch.compile: auto (on for 5,000+ steps with a compiler) | true | false | a mode
    cuda_graph: bool = False  # capture the whole step (forward, loss, backward, update) in one CUDA graph
    accum_steps: int = 1  # gradient accumulation: micro-batches per optimizer step
    sync_bn: bool = False  # SyncBatchNorm under DDP
    resume: str = ""  # "" | auto | path to a last.pt
    out_dir: str = ""  # run directory; default runs/<recipe>/<timestamp>
    overwrite: bool = False  # replace the run already in train.out_dir (otherwise refused unless resuming)
    runs_root: str = "runs"  # where default run directories go: <runs_root>/<recipe>/<timestamp>
    progress: bool = True  # progress bar per epoch (a terminal) or progress lines (a log)
    log_every_s: float = 30.0  # seconds between progress lines when output is not a terminal (0: every step)
    keep_every: int = 0  # also keep every N-th epoch's checkpoint as epoch<E>.pt (0 = none), e.g. to study selection
    limit_batches: int = 0  # stop each training epoch after this many steps (0 = all); for smoke runs
    threads: int | str = "auto"  # torch CPU threads: auto (the idle cores, measured at start) | N | 0 (torch's default)
    task: str = "classification"  # what is trained and measured (dhm.TASKS): classification
    select: str = ""  # what picks best.pt: a validation metric (e.g. loss) | last (the last epoch) | "" (the task's)


@dataclass
class Config:
    name: str = "run"  # recipe name: names the run directory
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
