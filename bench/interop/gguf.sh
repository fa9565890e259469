#!/usr/bin/env bash
# pmq's GGUF output checked by llama.cpp's own tools (bench/interop/gguf_env.sh builds them once):
# 1. the real all-MiniLM-L6-v2, GPTQ on each GGUF grid (Q4_0, Q4_1, Q8_0) with testbed
#    calibration text, written as GGUF + fake-quant; llama.cpp's converter turns the fake-quant
#    output into an f32 GGUF; gguf-py compares the two files key by key and tensor by tensor
#    (pmq's blocks dequantized by gguf.quants must equal the converter's f32 weights), and
#    llama-embedding embeds sentences with both (and transformers with the fake-quant model);
# 2. a tiny random Llama (transformers-made, MiniLM's WordPiece vocabulary) quantized to Q4_0:
#    gguf-py dequantizes pmq's file and compares with the fake-quant weights (q/k permuted as the
#    converter permutes them), and llama-perplexity's perplexity on pmq's GGUF is compared with
#    the same perplexity (same tokens, chunks, scored positions) of the fake-quant model in
#    transformers;
# 3. a tiny random FLAN-T5-shaped model (gated GELU, untied output) with a SentencePiece
#    vocabulary trained on the calibration text (llama.cpp's converter needs spiece.model),
#    quantized to Q4_0 with GPTQ on {"input","target"} pairs: gguf-py compares pmq's file with
#    the converter's f32 GGUF of the fake-quant output (keys — the SentencePiece vocabulary
#    included — and tensors), and llama.cpp's llama-simple decodes greedily with both files,
#    compared with transformers' greedy decoding on the fake-quant model.
# Results: bench/interop/gguf_results.jsonl and gguf_results.md.
#
#   bench/interop/gguf.sh          # PMQ_GGUF_WORK: work directory (default /tmp/pmq-gguf)
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
work="${PMQ_GGUF_WORK:-${TMPDIR:-/tmp}/pmq-gguf}"
eval "$(bench/interop/gguf_env.sh)"
cargo build --release -p pmq-cli --bin pmq >&2
pmq="$root/target/release/pmq"
mkdir -p "$work"
"$pmq" testbed fetch >&2
backbone=$("$pmq" testbed list | python3 -c 'import json,sys; print(json.load(sys.stdin)["backbone"])')
[ -f "$work/calib.jsonl" ] || "$pmq" testbed export --task movie-sentiment --split calib --out "$work/calib.jsonl" >&2
results="$work/gguf_results.jsonl"
: > "$results"

for grid in q4_0 q4_1 q8_0; do
  out="$work/bert-$grid"
  rm -rf "$out"
  "$pmq" quantize --model "$backbone" --method gptq --calib "t=$work/calib.jsonl" \
    --samples-per-task 64 --grid "$grid" --format gguf-fake --out "$out" >/dev/null 2>"$out.log"
  "$VENV_PY" "$CONVERTER" "$out/fake" --outtype f32 --outfile "$work/bert-$grid-converter.gguf" \
    >"$out.converter.log" 2>&1
  "$VENV_PY" bench/interop/gguf_check.py vs-converter "$out/gguf/model.gguf" \
    "$work/bert-$grid-converter.gguf" | tee -a "$results"
  "$VENV_PY" bench/interop/gguf_embed.py "$LLAMA_BIN/llama-embedding" "$out/gguf/model.gguf" \
    "$work/bert-$grid-converter.gguf" "$out/fake" 2>"$out.embed.log" | tee -a "$results"
done

tiny="$work/tiny"
if [ ! -d "$tiny/llama" ]; then
  "$VENV_PY" bench/interop/interop.py make-tiny "$tiny"
  for f in tokenizer.json tokenizer_config.json vocab.txt special_tokens_map.json; do
    [ -f "$backbone/$f" ] && cp "$backbone/$f" "$tiny/llama/"
  done
  # a causal LM's tokenizer adds BOS but no EOS (BERT's adds [SEP]; llama-perplexity refuses
  # vocabularies that add EOS): as a Llama fine-tune's tokenizer_config.json would say
  python3 - "$tiny/llama/tokenizer_config.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
c.update(add_bos_token=True, add_eos_token=False)
json.dump(c, open(sys.argv[1], "w"), indent=2)
PY
fi
out="$work/llama-q4_0"
rm -rf "$out"
"$pmq" quantize --model "$tiny/llama" --method gptq --calib "t=$work/calib.jsonl" \
  --samples-per-task 32 --grid q4_0 --format gguf-fake --out "$out" >/dev/null 2>"$out.log"
"$VENV_PY" bench/interop/gguf_check.py vs-fake "$out/gguf/model.gguf" "$out/fake" | tee -a "$results"
# perplexity text: the calibration sentences, one per line
python3 -c 'import json,sys; [print(json.loads(l)["text"]) for l in open(sys.argv[1])]' \
  "$work/calib.jsonl" > "$work/ppl.txt"
n_ctx=128
"$LLAMA_BIN/llama-perplexity" -m "$out/gguf/model.gguf" -f "$work/ppl.txt" -c "$n_ctx" -b "$n_ctx" \
  --chunks 8 -t 2 >"$out.ppl.log" 2>&1
"$LLAMA_BIN/llama-tokenize" -m "$out/gguf/model.gguf" -f "$work/ppl.txt" --ids \
  >"$out.tokens" 2>/dev/null
bos=$("$VENV_PY" -c '
import sys
from gguf import GGUFReader
r = GGUFReader(sys.argv[1])
add = r.fields.get("tokenizer.ggml.add_bos_token")
bos = r.fields.get("tokenizer.ggml.bos_token_id")
print(int(bos.parts[bos.data[0]][0]) if add is not None and bool(add.parts[add.data[0]][0]) and bos else -1)
' "$out/gguf/model.gguf")
# the running perplexity after the last chunk ("[k]PPL,"; the "Final estimate" line is not
# always flushed before exit)
last=$(grep -o "\[[0-9]*\][0-9.]*" "$out.ppl.log" | tail -n1)
chunks=$(echo "$last" | sed 's/^\[\([0-9]*\)\].*/\1/')
ppl=${last#*]}
"$VENV_PY" bench/interop/gguf_ppl.py "$out/fake" "$out.tokens" "$n_ctx" "$bos" "$chunks" \
  | python3 -c 'import json,sys; r = json.loads(sys.stdin.read()); r["llama_cpp_ppl"] = float(sys.argv[1]); r["rel_diff"] = abs(r["ppl"] - r["llama_cpp_ppl"]) / r["ppl"]; print(json.dumps(r))' "$ppl" \
  | tee -a "$results"

t5="$work/tiny-t5"
[ -d "$t5/t5" ] || "$VENV_PY" bench/interop/gguf_t5.py make "$t5" "$work/calib.jsonl" 2>"$t5.make.log"
out="$work/t5-q4_0"
rm -rf "$out"
"$pmq" quantize --model "$t5/t5" --method gptq --calib "t=$t5/t5-calib.jsonl" \
  --samples-per-task 64 --grid q4_0 --format gguf-fake --out "$out" >/dev/null 2>"$out.log"
"$VENV_PY" "$CONVERTER" "$out/fake" --outtype f32 --outfile "$work/t5-q4_0-converter.gguf" \
  >"$out.converter.log" 2>&1
"$VENV_PY" bench/interop/gguf_check.py vs-converter "$out/gguf/model.gguf" \
  "$work/t5-q4_0-converter.gguf" | tee -a "$results"
python3 -c 'import json,sys; [print(json.loads(l)["input"]) for l in list(open(sys.argv[1]))[-8:]]' \
  "$t5/t5-calib.jsonl" > "$work/t5-prompts.txt"
"$VENV_PY" bench/interop/gguf_t5.py decode "$LLAMA_BIN/llama-simple" "$out/gguf/model.gguf" \
  "$work/t5-q4_0-converter.gguf" "$out/fake" "$work/t5-prompts.txt" 12 2>"$out.decode.log" \
  | tee -a "$results"

cp "$results" bench/interop/gguf_results.jsonl
python3 - "$results" bench/interop/gguf_results.md <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
out = ["| check | file | result |", "|---|---|---|"]
for r in rows:
    f = r["pmq"].split("/")[-3] if "pmq" in r else ""
    if r["check"] == "vs-converter":
        out.append(f"| gguf-py vs llama.cpp's converter (f32 of pmq's fake-quant) | {f} | "
                   f"{r['tensors']} tensors ({', '.join(f'{k} {v}' for k, v in r['tensor_types'].items())}), "
                   f"max abs diff after `gguf.quants.dequantize` **{r['max_abs_diff_dequantized']}**; "
                   f"{r['keys_compared']} keys compared, differing: {r['keys_differing'] or 'none'}; "
                   f"missing: {len(r['keys_missing'])} model-card keys (general.dataset.*, license, tags…) |")
    elif r["check"] == "llama-embedding":
        a, b, c = (r["vs_converter_f32_in_llama_cpp"], r["vs_transformers_fake"],
                   r["converter_f32_vs_transformers_fake"])
        out.append(f"| llama-embedding, {r['sentences']} sentences: pmq GGUF vs converter f32 (both llama.cpp) / "
                   f"vs transformers on fake-quant / converter f32 vs transformers | {f} | min cosine "
                   f"{a['min_cosine']:.6f} / {b['min_cosine']:.6f} / {c['min_cosine']:.7f} |")
    elif r["check"] == "vs-fake":
        out.append(f"| gguf-py dequantized vs fake-quant safetensors (q/k un-permuted) | {f} | "
                   f"{r['tensors_compared']} tensors ({', '.join(f'{k} {v}' for k, v in r['tensor_types'].items())}), "
                   f"max abs diff **{r['max_abs_diff_dequantized']}** |")
    elif r["check"] == "ppl-transformers-fake":
        out.append(f"| llama-perplexity on pmq's GGUF vs the same scoring of the fake-quant model in "
                   f"transformers ({r['chunks']} chunks × {r['n_ctx']}, {r['scored']} scored tokens) | llama-q4_0 | "
                   f"{r['llama_cpp_ppl']:.2f} vs {r['ppl']:.2f} (rel. diff {r['rel_diff']:.1e}) |")
    elif r["check"] == "t5-greedy-decoding":
        out.append(f"| greedy decoding ({r['prompts']} prompts, {min(r['tokens_per_prompt'])}–"
                   f"{max(r['tokens_per_prompt'])} tokens each), identical outputs: llama-simple on pmq's "
                   f"GGUF vs on the converter's f32 / converter f32 in llama.cpp vs transformers on "
                   f"fake-quant / pmq's GGUF vs transformers | t5-q4_0 | {r['pmq_vs_converter_f32']} / "
                   f"{r['converter_f32_vs_transformers']} / {r['pmq_vs_transformers']} |")
open(sys.argv[2], "w").write("\n".join(out) + "\n")
print("\n".join(out))
PY
