#!/usr/bin/env bash
# The re-ID table of RESULTS.md: BoT alone (ce: the retrieval task supervises as BoT), deep supervision (dsl), DHM
# (dhm, dhm-gentle) and embedding mimicking (dhm-emb) on the PKU-Reid subset (74 identities, 2 cameras), the pku-reid recipe, SPLITS seeded
# identity splits (data.split_seed) x 2 training seeds, two runs side by side with one thread each. Resumable:
# rerun it and finished runs are skipped. Then the table: python benchmarks/reid_table.py runs/compare/pku-reid.
set -euo pipefail
cd "$(dirname "$0")/.."
data=${DHM_SHARED_DATA:-../shared/data}/pku-reid-subset
for split in $(seq 0 $((${SPLITS:-5} - 1))); do
  dhm compare pku-reid --seeds "${SEEDS:-2}" --modes "${MODES:-ce,dsl,dhm,dhm-gentle,dhm-emb}" \
    --jobs 2 --out "runs/compare/pku-reid/split$split" data.root="$data" data.split_seed="$split" \
    train.threads=1 train.progress=false "$@"
done
python benchmarks/reid_table.py runs/compare/pku-reid --out "${OUT:-benchmarks/results/cpu_pku_reid}"
