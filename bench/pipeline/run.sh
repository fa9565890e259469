#!/usr/bin/env bash
# Pipeline benchmark on the real testbed backbone (all-MiniLM-L6-v2) and the 8 real testbed
# tasks' calibration splits (128 samples × ≤ 64 tokens per task), with K synthetic experts
# (base + seeded task vectors, `make_experts`) merged by task arithmetic. Runs GPTQ and E-PMQ
# through `pmq quantize` and records wall time, per-phase times, peak RSS and output agreement:
#
#   bench/pipeline/run.sh                       # writes bench/pipeline/results.{json,md}
#   PMQ_BASELINE=/path/to/older/pmq bench/pipeline/run.sh   # also times another build
#
# Needs what `pmq testbed fetch` needs (python3 -m pip, npm, apt-get/dpkg-deb); ~10 min on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
cargo build --release -p pmq-cli --bins --examples >&2
pmq="$root/target/release/pmq"
work="${PMQ_BENCH_WORK:-${TMPDIR:-/tmp}/pmq-bench-pipeline}"
mkdir -p "$work"
cd "$work"
"$pmq" testbed fetch >&2
backbone=$("$pmq" testbed list | python3 -c 'import json,sys; print(json.load(sys.stdin)["backbone"])')
tasks=(movie-sentiment tweet-sentiment newsgroups reuters-r8 election-authorship bbc-news spam language-id)
for t in "${tasks[@]}"; do
  [ -f "calib-$t.jsonl" ] || "$pmq" testbed export --task "$t" --split calib --out "calib-$t.jsonl" >&2
done
[ -d ex7 ] || "$root/target/release/examples/make_experts" "$backbone" ex 8 0.01 3 >&2

# the first k experts/tasks, and their task-arithmetic merge; runs named *-plain quantize the
# merge without its experts (as GPTQModel would: no expert fold, no expert report figures)
args_for() {
  local k=$1 name=$2 a=""
  for ((i = 0; i < k; i++)); do
    [[ $name == *-plain ]] || a="$a --expert ex$i"
    a="$a --calib ${tasks[$i]}=calib-${tasks[$i]}.jsonl"
  done
  echo "$a"
}
merged_for() {
  local k=$1 e=""
  for ((i = 0; i < k; i++)); do e="$e --expert ex$i"; done
  [ -d "ta$k" ] || "$pmq" merge --base "$backbone" $e --method task-arithmetic --out "ta$k" >&2
  echo "ta$k"
}

results="$work/results.jsonl"
[ -n "${PMQ_BENCH_APPEND:-}" ] || : > "$results"
run() { # name binary k method extra...
  local name=$1 bin=$2 k=$3 method=$4
  shift 4
  local model out
  model=$(merged_for "$k")
  out="out-$name"
  rm -rf "$out"
  echo "== $name" >&2
  local t0 t1 line
  t0=$(date +%s.%N)
  line=$("$bin" quantize --model "$model" --method "$method" $(args_for "$k" "$name") \
    --samples-per-task 128 --max-seq-len 64 --format fake --time-block-forward --out "$out" "$@" \
    2>"$name.log" | tail -n1)
  t1=$(date +%s.%N)
  python3 - "$name" "$k" "$method" "$t0" "$t1" "$out" "$line" "$*" >>"$results" <<'PY'
import json, sys
name, k, method, t0, t1, out, line, extra = sys.argv[1:9]
s = json.loads(line)
rep = json.load(open(f"{out}/pmq_report.json"))
print(json.dumps({
    "name": name, "k": int(k), "method": method, "flags": extra,
    "wall_s": float(t1) - float(t0), "pipeline_s": rep["wall_seconds"],
    "peak_rss_mib": s.get("peak_rss_mib"), "phases": rep.get("phases"),
    "objective_sum": sum(l["objective"] or 0.0 for l in rep["linears"]),
}))
PY
}

run gptq-k8 "$pmq" 8 gptq
# the forward cache changes speed only (the agreement table checks: 100 % identical weights)
run gptq-k8-no-forward-cache "$pmq" 8 gptq --forward-cache-mib 0
run gptq-k8-no-true-seq "$pmq" 8 gptq --no-true-sequential
run gptq-k8-plain "$pmq" 8 gptq
run gptq-k8-no-true-seq-plain "$pmq" 8 gptq --no-true-sequential
for k in 2 4 8; do run "epmq-k$k" "$pmq" "$k" epmq; done
run epmq-k8-per-task-deviation "$pmq" 8 epmq --deviation per-task
# memory flat in K: with bf16 calibration states, K = 8 needs K = 2's memory plus 6 tasks' states
for k in 2 8; do run "epmq-k$k-bf16-states" "$pmq" "$k" epmq --state-dtype bf16; done
if [ -n "${PMQ_BASELINE:-}" ]; then
  run baseline-gptq-k8 "$PMQ_BASELINE" 8 gptq
  run baseline-gptq-k8-no-true-seq "$PMQ_BASELINE" 8 gptq --no-true-sequential
  run baseline-epmq-k8 "$PMQ_BASELINE" 8 epmq
fi

# agreement of the outputs: fraction of identical weights between runs of the same method
python3 "$root/bench/pipeline/summarize.py" "$work" "$results" "$root/bench/pipeline"
