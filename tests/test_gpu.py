"""On a CUDA device: training steps never wait for the host (``torch.cuda.set_sync_debug_mode("error")`` turns
every synchronising call into an error), for plain training, DHM with its dynamic options, and label smoothing."""

from __future__ import annotations

import pytest
import torch

from dhm.config import load_config
from dhm.engine import Trainer, build_trainer

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

SMALL = [
    "data.name=synthetic",
    "data.options.train_size=512",
    "data.options.test_size=64",
    "data.val_size=64",
    "data.batch_size=64",
    "train.device=cuda",
    "train.progress=false",
    "train.amp=bf16",
    "train.channels_last=true",
]


@pytest.mark.parametrize(
    "overrides",
    [
        ["loss.mode=ce"],
        ["loss.mode=ce", "loss.label_smoothing=0.1"],
        ["loss.mode=dhm"],
        ["loss.mode=dhm", "loss.dynamic=official", "loss.rampup_epochs=2", "loss.rampup=sigmoid"],
        ["loss.mode=dhm", "loss.dynamic=bernoulli(0.5)", "train.accum_steps=2"],
        ["loss.mode=dhm", "loss.dynamic=official", "loss.rampup_epochs=2", "train.cuda_graph=true"],
    ],
    ids=["ce", "ls", "dhm", "dhm-official-rampup", "dhm-bernoulli-accum", "dhm-cuda-graph"],
)
def test_training_steps_never_synchronise(tmp_path, overrides):
    trainer = build_trainer(load_config("smoke", [*SMALL, *overrides, f"train.out_dir={tmp_path}"]))
    model = trainer.model
    trainer.run_steps(model, 0)  # first calls: allocations, cuDNN plans
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        sums, correct, seen = trainer.run_steps(model, 1)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert seen == 512 - 64 and torch.isfinite(sums["loss"]).item() and 0 <= correct[0].item() <= seen


def test_in_memory_loader_is_on_the_device_and_reproducible():
    from dhm.data import TensorSource, build_loader

    source = TensorSource(torch.randint(0, 256, (300, 3, 32, 32), dtype=torch.uint8), torch.randint(0, 10, (300,)))
    kwargs = {"train": True, "batch_size": 100, "augment": "cifar", "mean": (0.5,) * 3, "std": (0.25,) * 3, "seed": 3}
    first = [x for x, _ in build_loader(source, device=torch.device("cuda"), **kwargs)]
    again = [x for x, _ in build_loader(source, device=torch.device("cuda"), **kwargs)]
    assert all(a.is_cuda and torch.equal(a, b) for a, b in zip(first, again))


@pytest.fixture(autouse=True)
def _global_modes():
    """The trainer and these tests switch process-wide cuDNN modes; later tests must not inherit them."""
    yield
    torch.backends.cudnn.deterministic = False
    torch.backends.cudnn.benchmark = False


def _params(trainer: Trainer) -> list[torch.Tensor]:
    return [p.detach().clone() for p in trainer.model.parameters()]


def _trainer(tmp_path, *overrides: str) -> Trainer:
    return build_trainer(load_config("smoke", [*SMALL, "train.amp=off", *overrides, f"train.out_dir={tmp_path}"]))


def test_cuda_graph_step_computes_the_eager_step(tmp_path):
    """Four steps with deterministic convolutions and a learning rate that changes every step: three eager warm-up
    steps and the captured one, against four eager steps. (Over many steps, SGD at these learning rates amplifies
    last-bit differences of reduction order into visible weight differences, so longer runs are compared by loss.)"""
    # cuDNN's deterministic kernels, not train.deterministic: torch's deterministic mode refuses the CUDA
    # backward of AdaptiveAvgPool2d that these ResNets use.
    torch.backends.cudnn.deterministic = True
    args = ("loss.mode=dhm", "loss.dynamic=bernoulli(0.5)", "optim.warmup_epochs=2")
    eager = _trainer(tmp_path / "eager", *args, "train.limit_batches=4")
    graph = _trainer(tmp_path / "graph", *args, "train.limit_batches=4", "train.cuda_graph=true")
    torch.backends.cudnn.benchmark = False  # the trainers turned autotuning on: it may pick other algorithms
    eager.train_one_epoch(eager.model, 0)
    graph.train_one_epoch(graph.model, 0)
    assert graph.step.graph is not None  # the fourth step was captured and replayed
    for a, b in zip(_params(eager), _params(graph)):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5)
    # Two full epochs: the same training curve.
    eager_losses = [eager.train_one_epoch(eager.model, e)["train/loss"] for e in (1, 2)]
    graph_losses = [graph.train_one_epoch(graph.model, e)["train/loss"] for e in (1, 2)]
    assert graph_losses == pytest.approx(eager_losses, rel=5e-3)


def test_cuda_graph_replays_read_the_learning_rate(tmp_path):
    """The schedule sets the learning rate to 0 after epoch 1: replays of a graph captured at lr 0.1 must then
    leave every weight exactly as it is."""
    trainer = _trainer(tmp_path, "loss.mode=dhm", "train.cuda_graph=true", "optim.milestones=[1]", "optim.gamma=0")
    trainer.train_one_epoch(trainer.model, 0)
    before = _params(trainer)
    trainer.train_one_epoch(trainer.model, 1)
    assert trainer.optimizer.param_groups[0]["lr"] == 0.0
    assert all(torch.equal(a, b) for a, b in zip(before, _params(trainer)))


def test_cuda_graph_refuses_what_it_cannot_capture(tmp_path):
    from dhm.errors import ConfigError

    with pytest.raises(ConfigError, match="accum_steps=1"):
        _trainer(tmp_path, "train.cuda_graph=true", "train.accum_steps=2")
