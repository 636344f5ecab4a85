#!/usr/bin/env bash
# The speed, inference and cost-growth tables of BENCHMARKS.md: CIFAR ResNet-32 with the paper's branches,
# 100 classes, batch 128, on whatever device this machine has (CPU here). Writes benchmarks/results/.
set -euo pipefail
cd "$(dirname "$0")/.."
tag=${1:-cpu}
dhm bench --model cifar_resnet32 --classes 100 --batch 128 --suite speed,inference,growth --modes ce,dsl,dhm \
  --steps 10 --warmup 3 --json "benchmarks/results/${tag}_resnet32.json" --markdown "benchmarks/results/${tag}_resnet32.md"
