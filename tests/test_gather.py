"""Evaluation gathers every process's rows, never an all-reduce of a zero-padded whole: two gloo processes give the
same retrieval metrics as one, and each process holds the split's N x D embeddings (not W x N x D)."""

from __future__ import annotations

import os
import tempfile

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from dhm.data import Batch
from dhm.gather import gather_equal, gather_rows
from dhm.tasks import EvalContext, get_task

N, D = 37, 8  # an odd split: the shards differ in size


def _split() -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(N, D, generator=g)
    pids = torch.randint(0, 6, (N,), generator=g)
    cams = torch.randint(0, 2, (N,), generator=g)
    roles = (torch.arange(N) % 3 == 0).long()  # a third queries, the rest gallery
    return feats, pids, cams, roles


def _batches(rank: int, world: int) -> list[Batch]:
    feats, pids, cams, roles = _split()
    shard = torch.arange(rank, N, world)
    return [
        Batch(feats[i], pids[i], {"index": i, "camera": cams[i], "role": roles[i]}) for i in shard.split(5)
    ]  # batches of 5 of this process's shard, as dhm's evaluation loaders cut them


def _evaluate(rank: int, world: int, seen: list | None = None) -> dict[str, float]:
    def gather(rows):
        whole = gather_rows(rows)
        if seen is not None:
            seen.append(tuple(whole.shape))
        return whole

    ctx = EvalContext(
        device=torch.device("cpu"),
        autocast=lambda: torch.autocast("cpu", enabled=False),
        reduce_sum=lambda t: t,
        gather=gather,
    )
    return get_task("retrieval").evaluate(nn.Identity(), _batches(rank, world), ctx)


def _worker(rank: int, world: int, store: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    torch.set_num_threads(1)
    seen: list = []
    result = _evaluate(rank, world, seen)
    equal = gather_equal(torch.full((3, 2), float(rank)))
    torch.save({"result": result, "seen": seen, "equal": equal}, f"{out}.{rank}")
    dist.destroy_process_group()


@pytest.mark.dist
def test_two_processes_gather_the_same_retrieval_metrics_as_one():
    alone = _evaluate(0, 1)
    with tempfile.TemporaryDirectory() as tmp:
        store, out = os.path.join(tmp, "store"), os.path.join(tmp, "out")
        mp.spawn(_worker, args=(2, store, out), nprocs=2, join=True)
        runs = [torch.load(f"{out}.{rank}", weights_only=False) for rank in (0, 1)]
    for run in runs:
        assert run["result"] == pytest.approx(alone, abs=1e-9)
        shapes = [s for s in run["seen"] if len(s) == 2 and s[1] == D]
        assert shapes and all(s == (N, D) for s in shapes)  # N x D per process, not W x N x D
        assert torch.equal(run["equal"], torch.tensor([[0.0] * 2] * 3 + [[1.0] * 2] * 3))


def test_in_one_process_gather_is_the_rows_themselves():
    rows = torch.randn(4, 3)
    assert gather_rows(rows) is rows and gather_equal(rows) is rows
