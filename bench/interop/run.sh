#!/usr/bin/env bash
# pmq's GPTQ checkpoints in the clients people use: transformers 5 + optimum + gptqmodel on
# torch-CPU (their own venv). Quantizes (GPTQ, 4-bit, g128 for MiniLM / g32 for the tiny models,
# asymmetric) the real all-MiniLM-L6-v2 and tiny random Llama, T5 (gated-GELU) and CLIP vision
# checkpoints made by transformers itself, loads each GPTQ output with transformers and compares
# its outputs with pmq's fake-quant checkpoint of the same run; writes bench/interop/results.md.
#
#   bench/interop/run.sh        # PMQ_PEER_VENV: the venv (shared with bench/peers)
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
venv="${PMQ_PEER_VENV:-$HOME/.cache/pmq/venv-peer}"
work="${PMQ_INTEROP_WORK:-${TMPDIR:-/tmp}/pmq-interop}"
scripts/torch_venv.sh "$venv" "torch, gptqmodel, optimum" \
  gptqmodel optimum "transformers>=5" tokenizers safetensors
py="$venv/bin/python"
cargo build --release -p pmq-cli --bin pmq >&2
pmq="$root/target/release/pmq"
mkdir -p "$work"
"$pmq" testbed fetch >&2
backbone=$("$pmq" testbed list | python3 -c 'import json,sys; print(json.load(sys.stdin)["backbone"])')
[ -d "$work/llama" ] || "$py" bench/interop/interop.py make-tiny "$work"
for m in llama t5; do
  for f in tokenizer.json tokenizer_config.json vocab.txt special_tokens_map.json; do
    [ -f "$backbone/$f" ] && cp "$backbone/$f" "$work/$m/"
  done
done
"$py" -c "from transformers import CLIPImageProcessor as P; P(size={'shortest_edge': 64}, crop_size={'height': 64, 'width': 64}).save_pretrained('$work/clip')"
[ -f "$work/calib.jsonl" ] || "$pmq" testbed export --task movie-sentiment --split calib --out "$work/calib.jsonl" >&2
python3 - "$work" <<'PY'
import json, sys
w = sys.argv[1]
with open(f"{w}/calib.jsonl") as f, open(f"{w}/calib-t5.jsonl", "w") as g:
    for line in f:
        t = json.loads(line)["text"]
        g.write(json.dumps({"input": t, "target": " ".join(t.split()[:8])}) + "\n")
PY
imgs=$(python3 bench/scale/fetch_images.py "$work" 1 32)
: > "$work/results.jsonl"
run() { # family model calib group
  local fam=$1 model=$2 calib=$3 group=$4 out="$work/out-$1"
  rm -rf "$out"
  "$pmq" quantize --model "$model" --method gptq --calib "t=$calib" --samples-per-task 32 \
    --group-size "$group" --format both --out "$out" >/dev/null 2>"$work/$fam.log"
  if ! "$py" bench/interop/interop.py compare "$fam" "$out/gptq" "$out/fake" \
    >"$work/$fam-compare.out" 2>"$work/$fam-compare.log"; then
    # the client failed: record its last error line
    python3 -c 'import json,sys; print(json.dumps({"family": sys.argv[1], "error": sys.argv[2]}))' \
      "$fam" "$(grep -E "Error|error" "$work/$fam-compare.log" | tail -n1)" >"$work/$fam-compare.out"
  fi
  tail -n1 "$work/$fam-compare.out" | tee -a "$work/results.jsonl"
}
run bert "$backbone" "$work/calib.jsonl" 128
run llama "$work/llama" "$work/calib.jsonl" 32
run t5 "$work/t5" "$work/calib-t5.jsonl" 32
run clip "$work/clip" "$imgs/task-0" 32
# GPTQModel's own loader (GPTQModel.load), every dtype: float32 documents its CPU kernel's bug
: > "$work/gptqmodel.jsonl"
for spec in llama:bfloat16 llama:float16 llama:float32 bert:bfloat16; do
  fam=${spec%%:*} dt=${spec##*:}
  OMP_NUM_THREADS=2 GPTQMODEL_CPU_WORKERS=2 "$py" bench/interop/gptqmodel_load.py "$fam" \
    "$work/out-$fam/gptq" "$work/out-$fam/fake" "$dt" 2>"$work/gm-$fam-$dt.log" \
    | tail -n1 | tee -a "$work/gptqmodel.jsonl"
done
cp "$work/gptqmodel.jsonl" bench/interop/gptqmodel_results.jsonl
python3 - "$work/results.jsonl" bench/interop/results.md <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
out = ["| family | quantized linears loaded | min cosine (GPTQ vs fake-quant, bf16) | max rel. abs. diff | argmax agreement |",
       "|---|---|---|---|---|"]
for r in rows:
    if "error" in r:
        out.append(f"| {r['family']} | fails to load: `{r['error'].strip()}` | | | |")
        continue
    a = r.get("argmax_agreement")
    out.append(f"| {r['family']} | {r['quantized_linears_loaded']} | {r['min_cosine']:.6f} | "
               f"{r['max_abs_diff_rel']:.2e} | {'–' if a is None else f'{100 * a:.1f} %'} |")
open(sys.argv[2], "w").write("\n".join(out) + "\n")
print("\n".join(out))
PY
cp "$work/results.jsonl" bench/interop/results.jsonl
