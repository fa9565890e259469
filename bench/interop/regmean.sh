#!/usr/bin/env bash
# pmq's RegMean against a torch + transformers implementation of FusionBench's RegMean
# (bench/interop/regmean_ref.py) on the real all-MiniLM-L6-v2 with three experts fine-tuned on
# real testbed tasks (CI preset, seconds each): the Gram matrices and every merged tensor are
# compared; writes bench/interop/regmean_results.{json,md}.
#
#   bench/interop/regmean.sh        # PMQ_PEER_VENV: the torch venv (shared with bench/peers)
set -euo pipefail
cd "$(dirname "$0")/../.."
venv="${PMQ_PEER_VENV:-$HOME/.cache/pmq/venv-peer}"
work="${PMQ_INTEROP_WORK:-${TMPDIR:-/tmp}/pmq-regmean}"
scripts/torch_venv.sh "$venv" "torch, transformers, safetensors" "transformers>=5" tokenizers safetensors
cargo build --release -p pmq-cli --bin pmq >&2
pmq=target/release/pmq
mkdir -p "$work"
"$pmq" testbed fetch >&2
backbone=$("$pmq" testbed list | python3 -c 'import json,sys; print(json.load(sys.stdin)["backbone"])')
tasks="spam language-id movie-sentiment"
args=() ; ref=()
for t in $tasks; do
  [ -f "$work/$t.jsonl" ] || "$pmq" testbed export --task "$t" --split calib --out "$work/$t.jsonl" >&2
done
"$pmq" finetune --preset ci $(for t in $tasks; do echo --task "$t"; done) --out "$work/experts" >&2
for t in $tasks; do
  args+=(--expert "$work/experts/$t" --calib "$t=$work/$t.jsonl")
  ref+=("$work/experts/$t=$work/$t.jsonl")
done
n=64 len=64 ratio=0.6
rm -rf "$work/merged" "$work/grams"
start=$(date +%s.%N)
"$pmq" merge --method regmean --base "$backbone" "${args[@]}" --samples-per-task $n \
  --max-seq-len $len --batch-size 8 --regmean-ratio $ratio --keep-grams "$work/grams" \
  --out "$work/merged" >&2
secs=$(python3 -c "import time; print(round(time.time() - $start, 1))")
"$venv/bin/python" bench/interop/regmean_ref.py bench/interop/regmean_results.json "$work/merged" \
  "$work/grams" $ratio $len $n "${ref[@]}"
python3 - "$secs" <<'PY'
import json, sys
r = json.load(open("bench/interop/regmean_results.json"))
r["pmq_merge_seconds"] = float(sys.argv[1])
json.dump(r, open("bench/interop/regmean_results.json", "w"), indent=1)
md = f"""# RegMean: pmq vs a torch + transformers implementation of FusionBench's RegMean

all-MiniLM-L6-v2, {len(r['experts'])} experts (CI preset fine-tunes of spam, language-id, movie-sentiment),
{r['samples_per_task']} calibration samples per expert (its own task), ≤ {r['max_seq_len']} tokens, ratio {r['ratio']}.
pmq batches 8 samples (padding excluded); the reference runs one sample at a time (no padding).

| compared | tensors | max relative difference (max |Δ| / max |ref|) |
|---|---|---|
| Gram matrices (every encoder linear input, every expert) | {r['linears']} × {len(r['experts'])} | {r['max_rel_diff_grams']:.2e} |
| merged linear weights (RegMean solve) | {r['linears']} | {r['max_rel_diff_linears']:.2e} |
| other tensors (experts' mean) | {r['other_tensors']} | {r['max_rel_diff_other_tensors']:.2e} |

pmq merge (Gram matrices of 3 experts + merge) took {r['pmq_merge_seconds']} s on 2 cores.
Command: `bench/interop/regmean.sh`.
"""
open("bench/interop/regmean_results.md", "w").write(md)
print(md)
PY
