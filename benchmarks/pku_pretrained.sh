#!/usr/bin/env bash
# Re-ID from a pretrained backbone (RESULTS.md, "Re-ID from a pretrained backbone"): the shape of BoT's regime on
# this machine. 1) the backbone pretrained on the 50,000 CIFAR-10 JPEG training images (skipped when
# pretrained/cifar10-pretrain/deploy.pt exists; it stays out of git); 2) per identity split of the PKU-Reid subset,
# split-major, 2 seeds each, two runs side by side with one thread each (resumable: finished runs are skipped):
#   BoT's ladder   ID only -> + triplet -> + BNNeck -> + last stride 1 (= ce, BoT alone) -> + center loss
#   the comparison ce (BoT), dsl, dhm on top of the same BoT supervision
# every run keeping best.pt by validation mAP (train.select=mAP/main) so its summary holds the test of that
# checkpoint and of the last epoch; 3) the tables: benchmarks/results/cpu_pku_pretrained_{ladder,comparison}.*
#   PHASE=pilot benchmarks/pku_pretrained.sh        # first: the fine-tuning learning rate (0.1, 0.03, 0.01)
#   SPLITS=15 benchmarks/pku_pretrained.sh          # FIRST=k starts at split k; DHM_SHARED_DATA: the data
# Every finished run's summary is committed under benchmarks/results/pku_pretrained/ (runs/, pilot/) after each
# split and put back into runs/ at the start (benchmarks/committed_runs.py): a new machine skips what finished.
set -euo pipefail
cd "$(dirname "$0")/.."
shared=${DHM_SHARED_DATA:-../shared/data}
cifar=${DHM_DATA:-data}/CIFAR-10-images
kept=benchmarks/results/pku_pretrained
if [ ! -f pretrained/cifar10-pretrain/deploy.pt ]; then
  [ -d "$cifar" ] || { mkdir -p "$(dirname "$cifar")"; tar -xzf "$shared/cifar10-jpeg/CIFAR-10-images-jpeg.tar.gz" -C "$(dirname "$cifar")"; }
  dhm train cifar10-pretrain data.root="$cifar" train.progress=false train.overwrite=true
fi
# The committed runs started from one backbone: a backbone made again on another machine must be the same weights.
digest=$(python benchmarks/weights_digest.py pretrained/cifar10-pretrain/deploy.pt)
record=$kept/cifar10_pretrain_weights.sha256
if [ -f "$record" ] && [ "$(cat "$record")" != "$digest" ]; then
  echo "pku_pretrained.sh: pretrained/cifar10-pretrain/deploy.pt is not the backbone of the committed runs" \
    "($record); runs from two backbones would be mixed in one table" >&2
  exit 2
fi
echo "$digest" >"$record"
if [ "${PHASE:-}" = pilot ]; then  # the fine-tuning learning rate, chosen on validation mAP (3 splits, seed 0)
  lrs="ce+optim.lr=0.1,ce+optim.lr=0.03,ce+optim.lr=0.01"  # (the committed pilot ran lr 0.1 as plain "ce")
  python benchmarks/committed_runs.py restore runs/compare/pku-pretrained-pilot "$kept/pilot" --splits
  for split in 0 1 2; do
    dhm compare pku-reid-pretrained --seeds 0, --modes "$lrs" --jobs "${JOBS:-2}" \
      --out "runs/compare/pku-pretrained-pilot/split$split" data.root="$shared/pku-reid-subset" \
      data.split_seed="$split" train.select=mAP/main train.threads=1 train.progress=false
    python benchmarks/committed_runs.py keep runs/compare/pku-pretrained-pilot "$kept/pilot" --splits
  done
  python benchmarks/reid_table.py runs/compare/pku-pretrained-pilot --methods "$lrs" \
    --out benchmarks/results/cpu_pku_pretrained_pilot
  exit 0
fi
id_only="ce+loss.supervision.triplet_weight=0+model.neck=none+model.last_stride=2"
triplet="ce+model.neck=none+model.last_stride=2"
bnneck="ce+model.last_stride=2"
center="ce+loss.supervision.center_weight=5e-4"
MODES=${MODES:-$id_only,$triplet,$bnneck,ce,$center,dsl,dhm}
root=${OUT:-runs/compare/pku-pretrained}
python benchmarks/committed_runs.py restore "$root" "$kept/runs" --splits
for split in $(seq "${FIRST:-0}" $((${SPLITS:-15} - 1))); do
  dhm compare pku-reid-pretrained --seeds "${SEEDS:-2}" --modes "$MODES" --jobs 2 --out "$root/split$split" \
    data.root="$shared/pku-reid-subset" data.split_seed="$split" train.select=mAP/main train.threads=1 \
    train.progress=false
  python benchmarks/committed_runs.py keep "$root" "$kept/runs" --splits
done
labels="ID only=$id_only;+ triplet=$triplet;+ BNNeck=$bnneck;+ last stride 1 (ce)=ce;+ center loss=$center"
python benchmarks/reid_table.py "$root" --methods "$id_only,$triplet,$bnneck,ce,$center" --ladder \
  --labels "$labels" --out benchmarks/results/cpu_pku_pretrained_ladder
python benchmarks/reid_table.py "$root" --methods ce,dsl,dhm --out benchmarks/results/cpu_pku_pretrained_comparison
