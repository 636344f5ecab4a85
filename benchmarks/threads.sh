#!/usr/bin/env bash
# Threads on a shared CPU (README, "Threads"): the demo recipe's first epoch (1,293 digits, ResNet-20 + DHM) at
# train.threads=1, 2 and auto, on idle cores and with one other single-threaded process busy (a torch matmul loop,
# standing for another training run). Prints one line per run: the setting, the load, images/s. Run it alone.
set -euo pipefail
out=${1:-/tmp/dhm-threads}
lscpu | grep -E "^Model name|^CPU\(s\)"; echo "native bf16 flags: $(lscpu | grep -o -E "avx512_bf16|amx_bf16" | sort -u | tr "\n" " " || true)"
run() {  # $1 label, $2 threads
  local line
  line=$(dhm train demo train.epochs=1 train.threads="$2" train.out_dir="$out/$1-$2" train.overwrite=true 2>&1 |
    grep -E "^epoch 1/1|CPU thread" | tr '\n' ' ')
  echo "$1 train.threads=$2: $(grep -o -E '[0-9]+ CPU thread\(s\) \([^)]*\)' <<<"$line") $(grep -o -E '[0-9]+ img/s' <<<"$line")"
}
for t in 1 2 auto 1 2 auto; do run idle "$t"; done
python -c "import torch; torch.set_num_threads(1); a = torch.randn(512, 512)
while True: a = (a @ a).tanh()" &
spin=$!
trap 'kill $spin' EXIT
sleep 2
for t in 1 2 auto 1 2 auto; do run shared "$t"; done
