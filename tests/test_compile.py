"""torch.compile: a small branched model plus the loss compiles on CPU, without graph breaks or per-step
recompiles, and gives the eager loss. The default suite traces with ``aot_eager`` (dynamo + AOT autograd, seconds);
the ``slow`` marker runs the real inductor backend (C++ code generation, about a minute on 2 cores)."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_cifar

import dhm


def _check(backend: str, dynamic: str | None, dynamic_fork: bool) -> None:
    torch._dynamo.reset()
    model = tiny_cifar(dynamic_fork=dynamic_fork).train()
    loss_fn = dhm.MimicLoss(dynamic=dynamic)

    def step(x, y):
        return loss_fn(model(x), y)["loss"]

    compiled = torch.compile(step, backend=backend, fullgraph=True)
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    for i in range(3):  # new random masks each step must not recompile
        with torch._dynamo.config.patch(error_on_recompile=i > 0):
            got = compiled(x, y)
        if not dynamic_fork:  # with a stochastic fork the two runs draw different fork points
            torch.testing.assert_close(got, step(x, y), rtol=1e-4, atol=1e-4)
    got.backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize(
    "dynamic,dynamic_fork", [(None, False), pytest.param("official", True, marks=pytest.mark.slow)]
)
def test_traced_model_and_loss_match_eager(dynamic, dynamic_fork):
    _check("aot_eager", dynamic, dynamic_fork)


@pytest.mark.slow
def test_inductor_model_and_loss_match_eager():
    _check("inductor", "official", False)


def test_compile_auto_compiles_long_runs_where_a_compiler_exists(monkeypatch):
    import shutil

    from dhm.config import load_config
    from dhm.engine.compiling import AUTO_MIN_STEPS, auto_compile

    assert load_config("demo").train.compile == "auto"  # the default
    cpu = torch.device("cpu")
    assert auto_compile("auto", AUTO_MIN_STEPS - 1, cpu) == (None, "")  # a short run stays eager, silently
    assert auto_compile(None, 10**6, cpu) == (None, "") and auto_compile("default", 10, cpu) == ("default", "")
    if shutil.which("c++") or shutil.which("g++") or shutil.which("clang++"):
        mode, why = auto_compile("auto", 57_400, cpu)  # cifar100/resnet110's 164 epochs of 350 steps, fp32
        assert mode == "default" and "57,400 steps" in why
    monkeypatch.setattr("dhm.engine.compiling._has_amx", lambda: False)
    assert auto_compile("auto", 57_400, cpu, "bf16")[0] is None  # measured slower compiled without AMX
    monkeypatch.setattr(shutil, "which", lambda name: None)
    mode, why = auto_compile("auto", 57_400, cpu)
    assert mode is None and "no C++ compiler" in why  # said once in the run's log, never an error
