#!/usr/bin/env bash
# Solver benchmark: `pmq solve` (GPTQ, E-PMQ at K = 2, 4, 8) against GPTQModel's GPTQ
# (gptqmodel.quantization.gptq on torch-CPU, same machine, same layer and Hessian), 4-bit,
# group 128, asymmetric, damp 0.01, no act-order, lazy blocks of 128; square layers of
# d = 1024 and 4096 from `make_layer` (TA merge of K synthetic experts, correlated Hessians).
#
#   bench/solve/run.sh            # writes bench/solve/results.{json,md}
#
# Creates its own venv (torch CPU wheels + gptqmodel from PyPI) under the pmq cache; ~15 min.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
cache="${PMQ_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pmq}"
venv="${PMQ_BENCH_VENV:-$cache/bench-venv}"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import torch, gptqmodel" 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet torch numpy gptqmodel >&2
fi
export GPTQMODEL_CPU_WORKERS=2
cargo build --release -p pmq-cli --bins --examples >&2
pmq="$root/target/release/pmq"
work="${PMQ_BENCH_WORK:-${TMPDIR:-/tmp}/pmq-bench-solve}"
mkdir -p "$work"
cd "$work"
repeats=${PMQ_BENCH_REPEATS:-3}
results="$work/results.jsonl"
: > "$results"
for d in 1024 4096; do
  for k in 2 4 8; do
    tokens=$((d > 2048 ? d : 2 * d))
    [ -f "layer_${d}_k$k.safetensors" ] ||
      "$root/target/release/examples/make_layer" "layer_${d}_k$k.safetensors" "$d" "$d" "$k" "$tokens" 7 >&2
  done
  for method in gptq epmq; do
    for k in 2 4 8; do
      [ "$method" = gptq ] && [ "$k" != 8 ] && continue
      # the repeats run in one process, as GPTQModel's below do (best of them reported)
      rm -f "q_${method}_${d}_k$k.safetensors"
      "$pmq" solve --layer "layer_${d}_k$k.safetensors" --method "$method" --repeats "$repeats" \
        --out "q_${method}_${d}_k$k.safetensors" 2>/dev/null |
        python3 -c 'import json,sys; r=json.load(sys.stdin); r["tool"]="pmq"; print(json.dumps(r))' >>"$results"
    done
  done
  "$venv/bin/python" "$root/bench/solve/gptqmodel_solve.py" "layer_${d}_k8.safetensors" \
    "q_gptq_${d}_k8.safetensors" --repeats "$repeats" 2>/dev/null | tail -n1 >>"$results"
done
python3 "$root/bench/solve/summarize.py" "$results" "$root/bench/solve"
