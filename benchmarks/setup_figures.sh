#!/usr/bin/env bash
# The README's set-up figures on this machine: a fresh clone installed and `dhm train` run (the demo) timed from the
# venv's creation to the run's end (pip's cache as it is), then `dhm train cifar10-jpeg-quick` on the bundled
# CIFAR-10 JPEGs. Prints the CPU, whether it computes bf16 natively, the times and the test accuracies. Run it alone
# on the machine (other work on the cores slows every figure). Usage: benchmarks/setup_figures.sh [WORKDIR]
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-/tmp/dhm-setup-figures}
tarball=${DHM_SHARED_DATA:-$repo/../shared/data}/cifar10-jpeg/CIFAR-10-images-jpeg.tar.gz
lscpu | grep -E "^Model name|^CPU\(s\)"
echo "native bf16 flags: $(lscpu | grep -o -E "avx512_bf16|amx_bf16" | sort -u | tr "\n" " " || true)"
rm -rf "$work" && git clone -q "$repo" "$work" && cd "$work"
start=$(date +%s.%N)
python3 -m venv .venv && . .venv/bin/activate && pip install -q torch==2.13.0 && pip install -q -e . 2>/dev/null
installed=$(date +%s.%N)
dhm train > demo.log 2>&1
end=$(date +%s.%N)
echo "demo: install $(echo "$installed - $start" | bc) s, dhm train $(echo "$end - $installed" | bc) s, total $(echo "$end - $start" | bc) s"
grep -E "^precision|^main " demo.log
mkdir -p data && tar xzf "$tarball" -C data
start=$(date +%s.%N)
dhm train cifar10-jpeg-quick > quick.log 2>&1
end=$(date +%s.%N)
echo "cifar10-jpeg-quick: $(echo "$end - $start" | bc) s"
grep -E "^precision|^main " quick.log
