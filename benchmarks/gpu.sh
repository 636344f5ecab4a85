#!/usr/bin/env bash
# The GPU figures of BENCHMARKS.md and RESULTS.md in one prepared, resumable run. The default phases, in order:
#   1. gpu-tests: the `gpu`-marked tests (training steps under torch.cuda.set_sync_debug_mode("error"));
#   2. engine-graph: 3 epochs of `dhm train cifar10-jpeg` with the whole step in one CUDA graph (the accuracy runs'
#      path where it works, else eager);
#   3. probe (benchmarks/gpu_probe.py): 5, 10 and 18 short runs at once, to measure how many pay side by side;
#   4. accuracy: `dhm compare cifar10-jpeg` of ce / ls / dsl / dhm / dhm-rampup / dhm-gentle x 3 seeds, ResNet-32,
#      the paper's schedule (164 epochs, lr steps at 81 and 122) if all runs fit the time, else the longest that
#      does (at least 120 epochs, the same for all), else as many whole seeds as fit at 120 (the plan says which;
#      a later run adds the rest with ACC_EPOCHS fixed and ACC_SEEDS naming them);
#   5. speed-compiled-MODEL: compiled training steps (ce, dhm) of ResNet-110, WRN-28-10 and ResNet-50 at 224x224,
#      bf16 + channels_last, achieved FLOP/s against the GPU's dense bf16 peak;
#   6. reid-speed: the re-ID recipe's training images/s (BoT ResNet-50 at 256x128, BoT alone (ce) against BoT + DHM (dhm)).
# Phases 5 and 6 start only with the time they need left. Measured before and run only when GPU_PHASES names
# them: speed-MODEL (eager steps and inference), engine-eager, engine-compiled, conventional (the authors' kind of
# pipeline, benchmarks/conventional.py) and engine-graph-compiled.
#
# Usage: benchmarks/gpu.sh OUT DATA [--tiny]
#   OUT   folder for the results (GPU.md, gpu.json, compare.png, logs.tgz)
#   DATA  the CIFAR-10 JPEG tarball (CIFAR-10-images-jpeg.tar.gz) or its extracted CIFAR-10-images folder
#   --tiny  the same code path on 300 images, one CIFAR model, tiny step counts, no compilation and no CUDA graphs:
#           a CPU check (about 90 s; the engine phases other than eager are skipped: on a CPU they repeat it)
# Environment: GPU_BUDGET_S (wall seconds this invocation may take, default 540), GPU_MORE_S (seconds a second
#   invocation will add to the accuracy runs, default 0), GPU_WORK (state kept between invocations, default
#   runs/gpu), GPU_PHASES (run only these phases, e.g. "engine-graph conventional"; accuracy is a phase too),
#   ACC_EPOCHS (fix the epoch count), ACC_SEEDS (a count or a list such as "1,2"; default 3), ACC_MODES,
#   ACC_JOBS (runs side by side without a probe, default 5), PROBE_LEVELS (default "5 10 18").
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
  if [ -z "${GPU_PHASES:-}" ] && [[ " $optional " == *" $name "* ]]; then say "$name: measured before, not asked for"; return 0; fi
  if [ "$(left)" -lt "${need:-0}" ]; then say "$name: needs ${need}s, $(left)s left: for the next invocation"; return 0; fi
  say "$name: start ($(left)s left)"
  if "$@" >"$work/logs/$name.log" 2>&1; then touch "$work/done.$name"; say "$name: ok"; tail -n 2 "$work/logs/$name.log"
  else say "$name: FAILED (exit $?), last lines:"; tail -n 5 "$work/logs/$name.log"; fi
}

if [ "$tiny" = "--tiny" ]; then
  models="cifar_resnet20:8:10"; compiled_models="cifar_resnet20:8:10"; steps=1; warmup=1; conv_steps=2
  conv_warm=1; conv_workers=1; conv_batch=16; compile=false; bench_compile=off; graph=false; eng_epochs=1
  skip="engine-compiled engine-graph engine-graph-compiled"  # = eager here
  export ACC_EPOCHS=${ACC_EPOCHS:-1}; jobs=${ACC_JOBS:-2}; seeds=${ACC_SEEDS:-1}; levels=${PROBE_LEVELS:-2}
  probe_epochs=2; reid_args="--tiny"; speed_need=0; reid_need=0
  tiny_over="data.val_size=50 data.batch_size=32 data.eval_batch_size=100"
else
  models="cifar_resnet32:128:10 cifar_resnet110:128:10 wrn28_10:128:10 resnet50:256:1000"; steps=20; warmup=5
  compiled_models="cifar_resnet110:128:10 wrn28_10:128:10 resnet50:256:1000"; bench_compile=on
  conv_steps=150; conv_warm=20; conv_workers=4; conv_batch=128; compile=reduce-overhead; graph=true
  eng_epochs=3; skip=""
  jobs=${ACC_JOBS:-5}; seeds=${ACC_SEEDS:-3}; levels=${PROBE_LEVELS:-5 10 18}; probe_epochs=4
  reid_args="--batch 64 --steps 20 --warmup 5"; speed_need=150; reid_need=90
  tiny_over=""
fi
modes=${ACC_MODES:-ce,ls,dsl,dhm,dhm-rampup,dhm-gentle}
optional="speed-${models// / speed-} engine-eager engine-compiled conventional engine-graph-compiled"
optional=$(echo "$optional" | sed -E 's/:[0-9]+:[0-9]+//g')
[ "$tiny" = "--tiny" ] && optional=""  # the CPU check runs every phase's code path

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

# 2. speed tables measured before (eager steps, inference): only when GPU_PHASES names them ----------------------
for spec in $models; do
  IFS=: read -r model batch classes <<<"$spec"
  phase "speed-$model" $py -m dhm bench --model "$model" --classes "$classes" --batch "$batch" \
    --suite speed,inference --modes ce,dsl,dhm --precisions bf16 --formats channels_last --compile off \
    --best bf16,channels_last,off --steps "$steps" --warmup "$warmup" --no-engine --json "$work/speed-$model.json"
done

# 3. dhm's training path (and, when asked for, the conventional pipeline) ------------------------------------------
common=(data.root="$root" train.progress=false data.workers=16 $tiny_over)
phase engine-eager $py -m dhm train cifar10-jpeg "${common[@]}" train.epochs="$eng_epochs" train.compile=false \
  train.out_dir="$work/engine-eager"
phase engine-compiled $py -m dhm train cifar10-jpeg "${common[@]}" train.epochs="$eng_epochs" \
  train.compile="$compile" train.out_dir="$work/engine-compiled"
phase engine-graph $py -m dhm train cifar10-jpeg "${common[@]}" train.epochs="$eng_epochs" \
  train.cuda_graph="$graph" train.out_dir="$work/engine-graph"
phase conventional $py benchmarks/conventional.py --data "$root" --steps "$conv_steps" --warmup "$conv_warm" \
  --batch "$conv_batch" --workers "$conv_workers" --json "$work/conventional.json"
phase engine-graph-compiled $py -m dhm train cifar10-jpeg "${common[@]}" train.epochs="$eng_epochs" \
  train.cuda_graph="$graph" train.compile="$graph" train.out_dir="$work/engine-graph-compiled"

# 4. accuracy: how many runs pay side by side, then the runs, resumable -------------------------------------------
# The accuracy runs take the fastest engine path that worked without compiling (many processes compiling at once
# would share the CPU cores): the whole step in a CUDA graph, else eager.
if [ -f "$work/done.engine-graph" ]; then acc_path=(train.cuda_graph="$graph" train.compile=false)
else acc_path=(train.compile=false); fi
acc_common=("${common[@]}" data.workers=4 "${acc_path[@]}")
phase probe $py benchmarks/gpu_probe.py "$work" "$levels" "$probe_epochs" "${acc_common[@]}"
if [ -z "${GPU_PHASES:-}" ] || [[ " $GPU_PHASES " == *" accuracy "* ]]; then
  [ -f "$work/plan.json" ] || $py benchmarks/gpu_report.py plan "$work" "$(( $(left) - 45 + ${GPU_MORE_S:-0} ))" \
    "${ACC_EPOCHS:-0}" "$jobs" "$modes" "$seeds" || exit 2
  read -r epochs milestones run_seeds run_jobs < <($py -c "import json; p = json.load(open('$work/plan.json')); \
print(p['epochs'], ','.join(map(str, p['milestones'])), ','.join(map(str, p['seeds'])) + ',', p['jobs'])")
  acc=(cifar10-jpeg --seeds "$run_seeds" --modes "$modes" --out "$work/accuracy" "${acc_common[@]}"
       train.epochs="$epochs" "optim.milestones=[$milestones]")
  say "accuracy: $epochs epochs, milestones $milestones, seeds $run_seeds $run_jobs jobs, ${acc_path[*]}, $(left)s left"
  status=1
  if [ "$(left)" -gt 60 ]; then
    timeout --signal=TERM --kill-after=20 "$(( $(left) - 40 ))" $py -m dhm compare "${acc[@]}" --jobs "$run_jobs" \
      >>"$work/logs/accuracy.log" 2>&1; status=$?; say "accuracy: exit $status"
  fi
  # Stopped before the end: tabulate what finished (the unfinished runs are listed with their progress).
  [ "$status" -eq 0 ] || $py -m dhm compare "${acc[@]}" --no-train >"$work/logs/accuracy-table.log" 2>&1
  [ "$status" -eq 0 ] && touch "$work/done.accuracy"
fi

# 5. compiled training steps of the larger models, when the time is left ------------------------------------------
for spec in $compiled_models; do
  IFS=: read -r model batch classes <<<"$spec"
  need=$speed_need phase "speed-compiled-$model" $py -m dhm bench --model "$model" --classes "$classes" \
    --batch "$batch" --suite speed --modes ce,dhm --precisions bf16 --formats channels_last \
    --compile "$bench_compile" --steps "$steps" --warmup "$warmup" --no-engine --json "$work/speed-compiled-$model.json"
done

# 6. re-ID training speed (BoT ResNet-50 at 256x128, BoT alone (ce) against BoT + DHM (dhm)), when the time is left --------------------
need=$reid_need phase reid-speed $py benchmarks/reid_speed.py $reid_args --json "$work/reid-speed.json"

# 7. report -------------------------------------------------------------------------------------------------------
$py benchmarks/gpu_report.py report "$work" "$out"
say "report in $out ($(left)s left)"
