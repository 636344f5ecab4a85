#!/usr/bin/env bash
# The GPU figures of BENCHMARKS.md and RESULTS.md in one prepared, resumable run:
#   1. the `gpu`-marked tests (training steps under torch.cuda.set_sync_debug_mode("error"));
#   2. speed: images/s of ce / dsl / dhm training steps for CIFAR ResNet-32, ResNet-110, WRN-28-10 (batch 128) and
#      ResNet-50 at 224x224 (batch 256, synthetic data), bf16 + channels_last, achieved FLOP/s against the GPU's
#      dense bf16 peak; inference of the stripped model against the plain backbone;
#   3. dhm's own training path (`dhm train`, CIFAR-10 JPEG decoded once onto the GPU: eager, compiled with CUDA
#      graphs, the whole step in one CUDA graph, and that with a compiled model) against
#      the conventional pipeline (benchmarks/conventional.py), same GPU, same run;
#   4. accuracy: `dhm compare` of ce / ls / dsl / dhm / dhm-rampup, ResNet-32, the paper schedule scaled to the
#      number of epochs that fits the time budget (164 at most, 60 at least), the runs side by side (--jobs).
#
# Usage: benchmarks/gpu.sh OUT DATA [--tiny]
#   OUT   folder for the results (GPU.md, gpu.json, compare.png, logs.tgz)
#   DATA  the CIFAR-10 JPEG tarball (CIFAR-10-images-jpeg.tar.gz) or its extracted CIFAR-10-images folder
#   --tiny  the same code path on 300 images, one CIFAR model, tiny step counts, no compilation and no CUDA graphs:
#           a CPU check (about 60 s; the three other engine phases are skipped: on a CPU they repeat the eager one)
# Environment: GPU_BUDGET_S (wall seconds this invocation may take, default 540), GPU_MORE_S (seconds a second
#   invocation will add to the accuracy runs, default 0), GPU_WORK (state kept between invocations, default
#   runs/gpu), GPU_PHASES (run only these phases, e.g. "engine-graph conventional"; accuracy is a phase too),
#   ACC_EPOCHS (fix the epoch count), ACC_SEEDS (default 1), ACC_JOBS (default 5).
# A second invocation with the same WORK skips finished phases and resumes the accuracy runs.
set -uo pipefail
[ $# -ge 2 ] || { echo "usage: benchmarks/gpu.sh OUT DATA [--tiny]" >&2; exit 2; }
out=$(mkdir -p "$1" && cd "$1" && pwd); data=$2; tiny=${3:-}
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
work=${GPU_WORK:-runs/gpu}; mkdir -p "$work/logs"; work=$(cd "$work" && pwd)
budget=${GPU_BUDGET_S:-540}; t0=$(date +%s); deadline=$((t0 + budget))
left() { echo $((deadline - $(date +%s))); }
say() { echo "[gpu.sh $(( $(date +%s) - t0 ))s] $*"; }
# phase NAME CMD...: run once (a marker file records success), output to a log, never fatal for later phases
phase() {
  local name=$1; shift
  if [ -f "$work/done.$name" ]; then say "$name: done before, skipped"; return 0; fi
  if [ -n "${GPU_PHASES:-}" ] && [[ " $GPU_PHASES " != *" $name "* ]]; then say "$name: not in GPU_PHASES"; return 0; fi
  if [[ " $skip " == *" $name "* ]]; then say "$name: skipped in this mode"; return 0; fi
  say "$name: start ($(left)s left)"
  if "$@" >"$work/logs/$name.log" 2>&1; then touch "$work/done.$name"; say "$name: ok"; tail -n 2 "$work/logs/$name.log"
  else say "$name: FAILED (exit $?), last lines:"; tail -n 5 "$work/logs/$name.log"; fi
}

if [ "$tiny" = "--tiny" ]; then
  models="cifar_resnet20:8:10"; steps=1; warmup=1; conv_steps=2; conv_warm=1; conv_workers=1
  compile=false; graph=false; eng_epochs=1; skip="engine-compiled engine-graph engine-graph-compiled"  # = eager here
  export ACC_EPOCHS=${ACC_EPOCHS:-1}; jobs=${ACC_JOBS:-2}
  tiny_over="data.val_size=50 data.batch_size=32 data.eval_batch_size=100"
else
  models="cifar_resnet32:128:10 cifar_resnet110:128:10 wrn28_10:128:10 resnet50:256:1000"; steps=20; warmup=5
  conv_steps=150; conv_warm=20; conv_workers=4; compile=reduce-overhead; graph=true; eng_epochs=3; skip=""
  jobs=${ACC_JOBS:-5}
  tiny_over=""
fi
seeds=${ACC_SEEDS:-1}

# 0. environment and data ---------------------------------------------------------------------------------------
{ date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi";
  $py -c "import torch, sys; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(),
torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu', 'python', sys.version.split()[0])"; } \
  >"$work/env.txt" 2>&1
if [ "$tiny" = "--tiny" ]; then
  [ -d "$work/data/tiny" ] || $py benchmarks/gpu_report.py subset "$data" "$work/data/tiny" 20 10 || exit 2
  root="$work/data/tiny"
elif [ -d "$data" ]; then root=$(cd "$data" && pwd)
else
  [ -d "$work/data/CIFAR-10-images" ] || { mkdir -p "$work/data" && tar -xzf "$data" -C "$work/data"; } \
    || { echo "gpu.sh: cannot extract $data" >&2; exit 2; }
  root="$work/data/CIFAR-10-images"
fi
say "data: $root"

# 1. sync-free training steps on CUDA ------------------------------------------------------------------------------
phase gpu-tests $py -m pytest -q -m gpu -p no:cacheprovider tests/test_gpu.py

# 2. speed tables -------------------------------------------------------------------------------------------------
for spec in $models; do
  IFS=: read -r model batch classes <<<"$spec"
  phase "speed-$model" $py -m dhm bench --model "$model" --classes "$classes" --batch "$batch" \
    --suite speed,inference --modes ce,dsl,dhm --precisions bf16 --formats channels_last --compile off \
    --best bf16,channels_last,off --steps "$steps" --warmup "$warmup" --no-engine --json "$work/speed-$model.json"
done

# 3. dhm's training path against the conventional pipeline ---------------------------------------------------------
common=(data.root="$root" train.progress=false data.workers=16 $tiny_over)
phase engine-eager $py -m dhm train cifar10-jpeg "${common[@]}" train.epochs="$eng_epochs" train.compile=false \
  train.out_dir="$work/engine-eager"
phase engine-compiled $py -m dhm train cifar10-jpeg "${common[@]}" train.epochs="$eng_epochs" \
  train.compile="$compile" train.out_dir="$work/engine-compiled"
phase engine-graph $py -m dhm train cifar10-jpeg "${common[@]}" train.epochs="$eng_epochs" \
  train.cuda_graph="$graph" train.out_dir="$work/engine-graph"
phase conventional $py benchmarks/conventional.py --data "$root" --steps "$conv_steps" --warmup "$conv_warm" \
  --workers "$conv_workers" --json "$work/conventional.json"
phase engine-graph-compiled $py -m dhm train cifar10-jpeg "${common[@]}" train.epochs="$eng_epochs" \
  train.cuda_graph="$graph" train.compile="$graph" train.out_dir="$work/engine-graph-compiled"

# 4. accuracy, side by side, resumable ------------------------------------------------------------------------------
if [ -n "${GPU_PHASES:-}" ] && [[ " $GPU_PHASES " != *" accuracy "* ]]; then
  $py benchmarks/gpu_report.py report "$work" "$out"; say "report in $out (accuracy not in GPU_PHASES)"; exit 0
fi
# The accuracy runs take the fastest engine path that worked: the whole step in a CUDA graph, else the compiled
# model with CUDA graphs, else eager.
if [ -f "$work/done.engine-graph" ]; then acc_path=(train.cuda_graph="$graph" train.compile=false)
elif [ -f "$work/done.engine-compiled" ]; then acc_path=(train.compile="$compile")
else acc_path=(train.compile=false); fi
[ -f "$work/plan.json" ] || $py benchmarks/gpu_report.py plan "$work" "$(( $(left) - 45 + ${GPU_MORE_S:-0} ))" \
  "${ACC_EPOCHS:-0}" "$jobs" || exit 2
read -r epochs milestones < <($py -c "import json; p = json.load(open('$work/plan.json')); \
print(p['epochs'], ','.join(map(str, p['milestones'])))")
acc=(cifar10-jpeg --seeds "$seeds" --modes ce,ls,dsl,dhm,dhm-rampup --out "$work/accuracy"
     "${common[@]}" data.workers=4 train.epochs="$epochs" "optim.milestones=[$milestones]" "${acc_path[@]}")
say "accuracy: $epochs epochs, milestones $milestones, $jobs jobs, ${acc_path[*]}, $(left)s left"
status=1
if [ "$(left)" -gt 60 ]; then
  timeout --signal=TERM --kill-after=20 "$(( $(left) - 40 ))" $py -m dhm compare "${acc[@]}" --jobs "$jobs" \
    >"$work/logs/accuracy.log" 2>&1; status=$?; say "accuracy: exit $status"
fi
# Stopped before the end: tabulate what finished (the unfinished runs are listed with their progress).
[ "$status" -eq 0 ] || $py -m dhm compare "${acc[@]}" --no-train >"$work/logs/accuracy-table.log" 2>&1

# 5. report -------------------------------------------------------------------------------------------------------
$py benchmarks/gpu_report.py report "$work" "$out"
say "report in $out ($(left)s left)"
