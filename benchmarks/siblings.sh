#!/usr/bin/env bash
# The siblings table of RESULTS.md: every method under one recipe, one dhm compare command (resumable: rerun it
# and finished runs are skipped, unfinished ones resume). CIFAR ResNet-20 on 5,000 CIFAR-10 JPEG training images
# (the CPU regime in which DHM won), flip, batch 64 (cskd: 64 anchors + 64 partners), 30 epochs cosine after a
# 1-epoch warm-up, weight decay 5e-4; the same split, schedule and checkpoint selection (best validation) for all.
#   SEEDS=3 benchmarks/siblings.sh            # DHM_DATA: where CIFAR-10-images is (default data)
# It copies the table, its plots and every run's summary into benchmarks/results (cpu_siblings.*, siblings/).
set -euo pipefail
cd "$(dirname "$0")/.."
data=${DHM_DATA:-data}
shared=${DHM_SHARED:-../shared/data}
[ -d "$data/CIFAR-10-images" ] || { mkdir -p "$data"; tar -xzf "$shared/cifar10-jpeg/CIFAR-10-images-jpeg.tar.gz" -C "$data"; }
MODES=${MODES:-ce,ls,dsl,dhm,dhm-gentle,dsn,dks,dml,one,okddip,byot,cskd+data.batch_size=128,cskd+data.batch_size=128+loss.options.partner_forward=shared,pskd}
dhm compare cifar10-jpeg --seeds "${SEEDS:-3}" --modes "$MODES" --jobs "${JOBS:-2}" \
  --out "${OUT:-runs/compare/siblings}" data.root="$data/CIFAR-10-images" model.name=cifar_resnet20 \
  data.train_subset=5000 data.augment=flip data.batch_size=64 train.epochs=30 optim.schedule=cosine \
  optim.warmup_epochs=1 optim.weight_decay=5.0e-4 train.progress=false
# The committed copy (RESULTS.md): the table, its plots and every run's summary, paths relative to the repository.
out=benchmarks/results; root=${OUT:-runs/compare/siblings}; mkdir -p "$out/siblings"
cp "$root/compare.md" "$out/cpu_siblings.md"; cp "$root/compare.png" "$out/cpu_siblings.png"
cp "$root/compare_dynamics.png" "$out/cpu_siblings_dynamics.png"
sed "s#$PWD/##g" "$root/compare.json" > "$out/cpu_siblings.json"
for f in "$root"/*/seed*/summary.json; do
  run=$(dirname "$f"); sed "s#$PWD/##g" "$f" > "$out/siblings/$(basename "$(dirname "$run")")_$(basename "$run")_summary.json"
done
