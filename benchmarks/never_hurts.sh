#!/usr/bin/env bash
# Issue 7, item 3: which DHM setting is never worse than the better of plain training (ce) and deep supervision
# (dsl), at a short and at a long budget? A small sweep of the mimicking ramp-up (length, shape), temperature and
# weight, scored on the VALIDATION split only (`best_val_acc1` in each run's summary); test accuracy is read only
# for the chosen setting, in the 3-seed tables. Resumable like every `dhm compare` (finished runs are skipped).
#
#   benchmarks/never_hurts.sh                                  # both budgets, seed 0 (the sweep)
#   SEEDS=3 BUDGETS=short MODES_SHORT=ce,dsl benchmarks/never_hurts.sh   # the baselines' seed noise
#   SEEDS=3 MODES_SHORT=ce,dsl,X MODES_LONG=ce,dsl,Y benchmarks/never_hurts.sh   # the chosen setting, 3 seeds
#   python benchmarks/never_hurts_table.py                     # the table and the choice (validation only)
set -euo pipefail
cd "$(dirname "$0")/.."
shared=${DHM_SHARED_DATA:-../shared/data}
work=${DHM_WORK:-data}
mkdir -p "$work"
[ -d "$work/CIFAR-10-images" ] || tar -xzf "$shared/cifar10-jpeg/CIFAR-10-images-jpeg.tar.gz" -C "$work"
seeds=${SEEDS:-1}
jobs=${JOBS:-2}

# Short budget: the 10-epoch table of RESULTS.md (ResNet-20, 10,000 images, pad-crop + flip, cosine).
short=(data.root="$work/CIFAR-10-images" model.name=cifar_resnet20 data.train_subset=10000 train.epochs=10
  optim.schedule=cosine optim.warmup_epochs=1 optim.weight_decay=5.0e-4 data.eval_batch_size=500 train.progress=false)
# Long budget: the regime of RESULTS.md's 15-run table (5,000 images, flip only, batch 64, 30 epochs).
long=(data.root="$work/CIFAR-10-images" model.name=cifar_resnet20 data.train_subset=5000 data.augment=flip
  data.batch_size=64 train.epochs=30 optim.schedule=cosine optim.warmup_epochs=1 optim.weight_decay=5.0e-4
  train.progress=false)

# Ramp-up over a quarter (the registered dhm-rampup) or a half of the run, sigmoid or linear; T = 3; alpha = 0.5.
sweep() {  # $1 = half the run in epochs
  local h=$1
  echo "dhm-rampup,dhm-rampup+loss.rampup_epochs=$h,dhm-rampup+loss.rampup=linear+loss.rampup_epochs=$h,\
dhm-rampup+loss.rampup_epochs=$h+loss.temperature=3,dhm-rampup+loss.rampup_epochs=$h+loss.alpha=0.5"
}

for budget in ${BUDGETS:-short long}; do
  case $budget in
    short) dhm compare cifar10-jpeg --seeds "$seeds" --jobs "$jobs" --modes "${MODES_SHORT:-ce,dsl,$(sweep 5)}" \
             --out runs/never-hurts/short "${short[@]}" ;;
    long) dhm compare cifar10-jpeg --seeds "$seeds" --jobs "$jobs" --modes "${MODES_LONG:-ce,dsl,$(sweep 15)}" \
            --out runs/never-hurts/long "${long[@]}" ;;
  esac
done
