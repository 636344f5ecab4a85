#!/usr/bin/env bash
# The engine's training epoch (loader with on-device crop + flip, scheduler, per-step meters, the epoch's one
# sync) against the bare step (the engine's own EagerStep on a fixed batch), CIFAR ResNet-32 DHM, 100 classes,
# batch 128, eager fp32 and bf16. Run it on an idle machine: any other process on the cores makes it meaningless.
set -euo pipefail
cd "$(dirname "$0")/.."
tag=${1:-cpu}
dhm bench --model cifar_resnet32 --classes 100 --batch 128 --suite speed --modes dhm --precisions fp32,bf16 \
  --formats nchw --compile off --steps ${STEPS:-10} --warmup 3 \
  --json "benchmarks/results/${tag}_engine_gap.json" --markdown "benchmarks/results/${tag}_engine_gap.md"
