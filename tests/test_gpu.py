"""On a CUDA device: training steps never wait for the host (``torch.cuda.set_sync_debug_mode("error")`` turns
every synchronising call into an error), for plain training, DHM with its dynamic options, and label smoothing."""

from __future__ import annotations

import pytest
import torch

from dhm.config import load_config
from dhm.engine import Trainer

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

SMALL = [
    "data.name=synthetic",
    "data.train_size=512",
    "data.test_size=64",
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
    trainer = Trainer(load_config("smoke", [*SMALL, *overrides, f"train.out_dir={tmp_path}"]))
    model = trainer.model
    trainer.run_steps(model, 0)  # first calls: allocations, cuDNN plans
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        sums, correct, seen = trainer.run_steps(model, 1)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert seen == 512 - 64 and torch.isfinite(sums["loss"]).item() and 0 <= correct.item() <= seen


def test_in_memory_loader_is_on_the_device_and_reproducible():
    from dhm.data import TensorSource, build_loader

    source = TensorSource(torch.randint(0, 256, (300, 3, 32, 32), dtype=torch.uint8), torch.randint(0, 10, (300,)))
    kwargs = {"train": True, "batch_size": 100, "augment": "cifar", "mean": (0.5,) * 3, "std": (0.25,) * 3, "seed": 3}
    first = [x for x, _ in build_loader(source, device=torch.device("cuda"), **kwargs)]
    again = [x for x, _ in build_loader(source, device=torch.device("cuda"), **kwargs)]
    assert all(a.is_cuda and torch.equal(a, b) for a, b in zip(first, again))


def _train(tmp_path, cuda_graph: bool, epochs: int = 2) -> tuple[list[torch.Tensor], list[float]]:
    overrides = [*SMALL, "train.amp=off", "loss.mode=dhm", "optim.warmup_epochs=1.5", f"train.cuda_graph={cuda_graph}"]
    trainer = Trainer(load_config("smoke", [*overrides, f"train.out_dir={tmp_path}"]))
    losses = []
    for epoch in range(epochs):  # 7 steps an epoch: 3 eager, the capture, then replays
        losses.append(trainer.train_one_epoch(trainer.model, epoch)["train/loss"])
    return [p.detach().clone() for p in trainer.model.parameters()], losses


def test_cuda_graph_step_trains_like_the_eager_step(tmp_path):
    """Same weights after two epochs of a warm-up schedule (the lr changes every step): the replayed graph reads
    the learning rate, the batch and the loss weights anew at every step."""
    eager, eager_losses = _train(tmp_path / "eager", False)
    graph, graph_losses = _train(tmp_path / "graph", True)
    assert graph_losses == pytest.approx(eager_losses, rel=1e-3)
    for a, b in zip(eager, graph):
        torch.testing.assert_close(a, b, rtol=2e-3, atol=2e-4)


def test_cuda_graph_refuses_what_it_cannot_capture(tmp_path):
    from dhm.errors import ConfigError

    with pytest.raises(ConfigError, match="accum_steps=1"):
        Trainer(
            load_config("smoke", [*SMALL, "train.cuda_graph=true", "train.accum_steps=2", f"train.out_dir={tmp_path}"])
        )
