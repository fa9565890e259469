#!/usr/bin/env bash
# Scale runs on paper-shaped models (issue: performance and scale, part 4): a random
# architecture-faithful checkpoint with K synthetic experts (examples/scale_models.rs), merged by
# task arithmetic, quantized with GPTQ and E-PMQ (4-bit, g128, asym) on real calibration data —
# Fashion-MNIST images for the CLIP towers (bench/scale/fetch_images.py), the testbed's text tasks
# for the Llama. One JSON line per run goes to bench/scale/results.jsonl; summarize.py makes the
# tables.
#
#   bench/scale/run.sh SHAPE K SAMPLES_PER_TASK [METHODS]
#   bench/scale/run.sh vit-b32 8 256            # the paper's main setting
#   bench/scale/run.sh tinyllama 4 16 "gptq epmq"
#   bench/scale/run.sh llama2-7b 0 4 gptq          # K = 0: GPTQ of the base on all 8 text tasks
#
# Work files (checkpoints: 1.6 GB for vit-b32 K=8, 20 GB for tinyllama K=8) go to
# PMQ_SCALE_WORK (default /tmp/pmq-scale).
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
shape=$1 k=$2 samples=$3 methods=${4:-"gptq epmq"}
work="${PMQ_SCALE_WORK:-${TMPDIR:-/tmp}/pmq-scale}"
cargo build --release -p pmq-cli --bins --examples >&2
pmq="$root/target/release/pmq"
mkdir -p "$work"
models="$work/$shape-k$k"
calib=()
experts=()
case "$shape" in
  vit-*)
    imgs=$(python3 bench/scale/fetch_images.py "$work" "$k" "$samples")
    for ((i = 0; i < k; i++)); do calib+=(--calib "fmnist$i=$imgs/task-$i"); done
    seq=64 ;;
  tinyllama*|llama2-*)
    "$pmq" testbed fetch >&2
    backbone=$("$pmq" testbed list | python3 -c 'import json,sys; print(json.load(sys.stdin)["backbone"])')
    export PMQ_TOKENIZER="$backbone/tokenizer.json"
    tasks=(movie-sentiment tweet-sentiment newsgroups reuters-r8 election-authorship bbc-news spam language-id)
    for ((i = 0; i < (k > 0 ? k : 8); i++)); do
      t=${tasks[$((i % 8))]}
      f="$work/calib-$t.jsonl"
      [ -f "$f" ] || "$pmq" testbed export --task "$t" --split calib --out "$f" >&2
      calib+=(--calib "$t-$i=$f")
    done
    seq=128 ;;
  *) echo "unknown shape $shape" >&2; exit 2 ;;
esac
"$root/target/release/examples/scale_models" "$shape" "$k" "$models" >&2
for ((i = 1; i <= k; i++)); do experts+=(--expert "$models/expert-$i"); done
merged="$models/ta"
if [ "$k" = 0 ]; then
  merged="$models/base" # nothing to merge: the base is quantized (GPTQ)
else
  [ -d "$merged" ] || "$pmq" merge --base "$models/base" "${experts[@]}" --method task-arithmetic --out "$merged" >&2
fi
for method in $methods; do
  out="$models/out-$method"
  rm -rf "$out"
  echo "== $shape K=$k $method" >&2
  extra=()
  [ "$method" = epmq ] && extra=("${experts[@]}")
  line=$("$pmq" quantize --model "$merged" --method "$method" "${calib[@]}" "${extra[@]}" \
    --samples-per-task "$samples" --max-seq-len "$seq" --batch-size 16 --format gptq \
    --out "$out" 2>"$work/$shape-k$k-$method.log" | tail -n1)
  build=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
  git diff --quiet HEAD -- crates Cargo.toml Cargo.lock 2>/dev/null || build="$build+changes"
  python3 - "$shape" "$k" "$samples" "$method" "$out" "$line" "$build" >>bench/scale/results.jsonl <<'PY'
import json, os, sys
shape, k, samples, method, out, line, build = sys.argv[1:8]
s = json.loads(line)
rep = json.load(open(os.path.join(out, "pmq_report.json")))
size = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out))
tokens = sum(sum(l["tokens"]) for l in rep["linears"][:1])
print(json.dumps({
    "shape": shape, "k": int(k), "samples_per_task": int(samples), "method": method,
    "calibration_tokens": tokens, "linears": s["linears"], "wall_seconds": s["wall_seconds"],
    "peak_rss_mib": s["peak_rss_mib"], "phases": s["phases"], "output_bytes": size,
    "mean_quant_deviation": s["mean_quant_deviation"], "rms_expert_error": s["rms_expert_error"],
    "threads": os.cpu_count(), "build": build,
}))
PY
  tail -n1 bench/scale/results.jsonl >&2
done
