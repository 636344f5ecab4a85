"""The cost columns of the siblings table: for each method, under the table's recipe and overrides, the
parameters trained, the FLOPs per training image (one step of the engine: forward, loss, backward and update,
counted by ``torch.utils.flop_counter``, times the steps of an epoch, over the images it trains on) and the
seconds of one training epoch (the fastest of three), each also relative to ``ce``. Run it alone on an idle
machine (the seconds are wall time):

    python benchmarks/sibling_costs.py --data data/CIFAR-10-images --out benchmarks/results/cpu_sibling_costs
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from dhm.compare.modes import mode_overrides
from dhm.config import load_config
from dhm.engine import build_trainer

EPOCHS = 3  # timed epochs per method (the fastest counts)
MODES = (  # the modes of benchmarks/siblings.sh (each method at its authors' defaults) and DML's other updates
    "ce,ls,dsl,dhm,dhm-gentle,dsn,dsn-authors,dks,dml+data.batch_size=128,dml+loss.options.peer_update=joint,"
    "dml+loss.options.peer_update=alternating-one-batch,one,okddip,byot,cskd+data.batch_size=128,"
    "cskd+data.batch_size=128+loss.options.partner_forward=shared,pskd,dlb+data.batch_size=128"
)
TABLE = [
    "model.name=cifar_resnet20",
    "data.train_subset=5000",
    "data.augment=flip",
    "data.batch_size=64",
    "train.epochs=30",
    "optim.schedule=cosine",
    "optim.warmup_epochs=1",
    "optim.weight_decay=5.0e-4",
    "train.progress=false",
]


def measure(mode: str, data: str, out: Path, extra: list[str]) -> dict:
    table = [f"data.root={data}", *TABLE, *extra]
    base = load_config("cifar10-jpeg", table)
    overrides = [*table, *mode_overrides(mode, base), f"train.out_dir={out / mode}"]
    trainer = build_trainer(load_config("cifar10-jpeg", [*overrides, "train.overwrite=true"]))
    trainer.open_run()
    model, loss_fn = trainer.wrap(), trainer.loss_fn
    params = sum(p.numel() for p in model.parameters())
    batch = next(iter(trainer.parts.train))
    loss_fn.set_progress(1.0)
    with FlopCounterMode(display=False) as counter:  # the engine's own step (DML's alternating one re-runs a peer)
        trainer.step_for(model)(batch.x, batch.y, meta=batch.meta)
    # per training image: a step's FLOPs times the epoch's steps over the images an epoch trains on (cskd's
    # partners are extra work, not extra training images)
    flops = counter.get_total_flops() * trainer.steps_per_epoch / len(trainer.parts.train.source)
    times = []
    for epoch in range(EPOCHS):  # the fastest of a few epochs: one epoch alone varied by 10-15% between runs
        start = time.perf_counter()
        trainer.train_one_epoch(model, epoch)
        times.append(time.perf_counter() - start)
    seconds = min(times)
    trainer.lock.release()
    return {"mode": mode, "parameters": params, "flops_per_image": flops, "seconds_per_epoch": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="data/CIFAR-10-images")
    parser.add_argument("--modes", default=MODES)
    parser.add_argument("--out", default="benchmarks/results/cpu_sibling_costs")
    parser.add_argument("--work", default="runs/costs")
    parser.add_argument("--extra", nargs="*", default=[], help="more overrides (a tiny check: data.train_subset=256)")
    ns = parser.parse_args()
    modes = ns.modes.split(",")
    measure(modes[0], ns.data, Path(ns.work), ns.extra)  # warm-up, discarded: the first method measured ran ~8% slow
    rows = [measure(m, ns.data, Path(ns.work), ns.extra) for m in modes]
    ce = next(r for r in rows if r["mode"] == "ce")
    lines = [
        "| method | parameters at training | x ce | GFLOPs per training image | x ce | s per epoch | x ce |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['mode']} | {r['parameters'] / 1e6:.2f} M | {r['parameters'] / ce['parameters']:.2f} | "
            f"{r['flops_per_image'] / 1e9:.3f} | {r['flops_per_image'] / ce['flops_per_image']:.2f} | "
            f"{r['seconds_per_epoch']:.1f} | {r['seconds_per_epoch'] / ce['seconds_per_epoch']:.2f} |"
        )
    env = {"torch": torch.__version__, "threads": torch.get_num_threads()}
    Path(ns.out + ".json").write_text(json.dumps({"environment": env, "rows": rows}, indent=1))
    Path(ns.out + ".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
