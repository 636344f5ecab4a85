#!/usr/bin/env bash
# The siblings table of RESULTS.md: every method under one recipe, one dhm compare command (resumable: rerun it
# and finished runs are skipped, unfinished ones resume). CIFAR ResNet-20 on 5,000 CIFAR-10 JPEG training images
# (the CPU regime in which DHM won), flip, batch 64 per optimizer step of a network (cskd: 64 anchors + 64 partners;
# dlb: 64 new + 64 previous images; dml: each peer its own 64 as its authors), 30 epochs cosine after a 1-epoch
# warm-up, weight decay 5e-4; the same split, schedule and checkpoint selection (best validation) for all. Every
# method at its authors' defaults (docs/method.md section 9); dml+...peer_update=joint is dhm's former joint DML.
#   SEEDS=3 benchmarks/siblings.sh            # DHM_DATA: where CIFAR-10-images is (default data)
# SEEDS=0, runs seed 0 only (seed-major: run SEEDS=0, then SEEDS=1, then SEEDS=2, and the table fills by seed).
# It copies the table, its plots and every run's summary into benchmarks/results ($NAME.*, siblings_faithful/).
set -euo pipefail
cd "$(dirname "$0")/.."
data=${DHM_DATA:-data}
shared=${DHM_SHARED:-../shared/data}
[ -d "$data/CIFAR-10-images" ] || { mkdir -p "$data"; tar -xzf "$shared/cifar10-jpeg/CIFAR-10-images-jpeg.tar.gz" -C "$data"; }
# Runs finished on another machine come back from their committed copies (summary.json and metrics.jsonl), so
# that dhm compare skips them: a session's machine does not keep runs/ but the repository keeps the copies.
name=${NAME:-cpu_siblings_faithful}; runs=${name#cpu_}; root=${OUT:-runs/compare/siblings}
python benchmarks/committed_runs.py restore "$root" "benchmarks/results/$runs" --metrics
MODES=${MODES:-ce,ls,dsl,dhm,dhm-gentle,dsn,dsn-authors,dks,dml+data.batch_size=128,dml+loss.options.peer_update=joint,one,okddip,byot,cskd+data.batch_size=128,cskd+data.batch_size=128+loss.options.partner_forward=shared,pskd,dlb+data.batch_size=128}
dhm compare cifar10-jpeg --seeds "${SEEDS:-3}" --modes "$MODES" --jobs "${JOBS:-2}" \
  --out "$root" data.root="$data/CIFAR-10-images" model.name=cifar_resnet20 \
  data.train_subset=5000 data.augment=flip data.batch_size=64 train.epochs=30 optim.schedule=cosine \
  optim.warmup_epochs=1 optim.weight_decay=5.0e-4 train.progress=false ${EXTRA:-}
# The committed copy (RESULTS.md): the table, its plots and every run's summary, paths relative to the repository.
# NAME: the table's file stem (cpu_siblings_faithful; cpu_siblings is the 2026-12-04/05 table of dhm's former forms).
out=benchmarks/results; mkdir -p "$out/$runs"
cp "$root/compare.md" "$out/$name.md"; cp "$root/compare.png" "$out/$name.png"
cp "$root/compare_dynamics.png" "$out/${name}_dynamics.png"
sed "s#$PWD/##g" "$root/compare.json" > "$out/$name.json"
python benchmarks/committed_runs.py keep "$root" "$out/$runs" --metrics
