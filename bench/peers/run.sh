#!/usr/bin/env bash
# pmq vs GPTQModel (PyPI gptqmodel 7.x, torch CPU, its own venv) quantizing the same Llama
# checkpoint (random, hidden 1024, 8 layers: examples/scale_models llama-1024x8) with the same
# calibration token ids (8 testbed tasks × 16 texts × ≤ 128 tokens) and settings (4-bit, g128,
# asym, damp 0.01, no act-order, true-sequential; GPTQModel act_group_aware=False, float32).
# Records wall time, peak RSS and agreement (per-linear output error on the full-precision
# trajectory, relative weight difference) in bench/peers/results.{json,md}.
#
#   bench/peers/run.sh            # PMQ_PEER_VENV: the venv (made with pip when missing)
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
venv="${PMQ_PEER_VENV:-$HOME/.cache/pmq/venv-peer}"
work="${PMQ_PEER_WORK:-${TMPDIR:-/tmp}/pmq-peers}"
samples=${PMQ_PEER_SAMPLES:-16} seq=${PMQ_PEER_SEQ:-128}
scripts/torch_venv.sh "$venv" "torch, gptqmodel" \
  gptqmodel optimum "transformers>=5" tokenizers safetensors
cargo build --release -p pmq-cli --bins --examples >&2
pmq="$root/target/release/pmq"
mkdir -p "$work"
"$pmq" testbed fetch >&2
backbone=$("$pmq" testbed list | python3 -c 'import json,sys; print(json.load(sys.stdin)["backbone"])')
export PMQ_TOKENIZER="$backbone/tokenizer.json"
"$root/target/release/examples/scale_models" llama-1024x8 0 "$work/llama" >&2
model="$work/llama/base"
calib=() files=()
for t in movie-sentiment tweet-sentiment newsgroups reuters-r8 election-authorship bbc-news spam language-id; do
  f="$work/calib-$t.jsonl"
  [ -f "$f" ] || "$pmq" testbed export --task "$t" --split calib --out "$f" >&2
  calib+=(--calib "$t=$f") files+=("$f")
done
rm -rf "$work/pmq-out" "$work/peer-out"
sync # the checkpoint was just written: no writeback during either timed run
t0=$(date +%s.%N)
pmq_line=$("$pmq" quantize --model "$model" --method gptq "${calib[@]}" --samples-per-task "$samples" \
  --max-seq-len "$seq" --batch-size 16 --format both --out "$work/pmq-out" 2>"$work/pmq.log" | tail -n1)
t1=$(date +%s.%N)
# GPTQModel writes logs/ into its working directory: run it in the work directory
peer_line=$(cd "$work" && GPTQMODEL_CPU_WORKERS=2 "$venv/bin/python" "$root/bench/peers/peer.py" quantize "$model" "${files[@]}" \
  --samples "$samples" --seq "$seq" --out "$work/peer-out" 2>"$work/peer.log" | tail -n1)
t2=$(date +%s.%N)
cmp_line=$(cd "$work" && "$venv/bin/python" "$root/bench/peers/peer.py" compare "$model" "$work/pmq-out/fake" "$work/peer-out" \
  "${files[@]}" --samples "$samples" --seq "$seq" 2>"$work/compare.log" | tail -n1)
python3 - "$t0" "$t1" "$t2" "$pmq_line" "$peer_line" "$cmp_line" <<'PY'
import json, sys
t0, t1, t2 = map(float, sys.argv[1:4])
pmq, peer, cmp = (json.loads(x) for x in sys.argv[4:7])
res = {
    "model": "llama hidden 1024, 8 layers, intermediate 2816, 16 heads, 4 KV heads, vocab 32000 (random)",
    "settings": "4-bit, group 128, asymmetric, damp 0.01, no act-order, true-sequential, float32",
    "tokens": peer["tokens"], "sequences": peer["sequences"],
    "pmq": {"wall_s": t1 - t0, "peak_rss_mib": pmq["peak_rss_mib"], "phases": pmq["phases"]},
    "gptqmodel": {"wall_s": t2 - t1, "quantize_s": peer["quantize_s"], "load_s": peer["load_s"],
                  "save_s": peer["save_s"], "peak_rss_mib": peer["peak_rss_mib"]},
    "pmq_over_gptqmodel_wall": (t1 - t0) / (t2 - t1),
    "agreement": {k: v for k, v in cmp.items() if k != "per_linear"},
    "per_linear": cmp["per_linear"],
}
json.dump(res, open("bench/peers/results.json", "w"), indent=1)
a = res["agreement"]
md = [
    f"Model: {res['model']}; {res['tokens']:,} calibration tokens in {res['sequences']} sequences; {res['settings']}.",
    "",
    "| | wall | peak RSS | summed output error Σ tr(ΔHΔᵀ) |",
    "|---|---|---|---|",
    f"| pmq | {res['pmq']['wall_s']:.1f} s | {res['pmq']['peak_rss_mib']:.0f} MiB | {a['objective_pmq']:.4g} |",
    f"| GPTQModel 7.x (f32) | {res['gptqmodel']['wall_s']:.1f} s (quantize {res['gptqmodel']['quantize_s']:.1f} s) | {res['gptqmodel']['peak_rss_mib']:.0f} MiB | {a['objective_peer']:.4g} |",
    "",
    f"pmq / GPTQModel wall time: **{res['pmq_over_gptqmodel_wall']:.2f}×**; output error ratio pmq / GPTQModel "
    f"{a['objective_ratio_pmq_over_peer']:.4f}; mean relative difference of the dequantized weights "
    f"{a['mean_rel_weight_diff']:.2e}, {100 * a['mean_identical_fraction']:.1f} % of weights equal.",
]
open("bench/peers/results.md", "w").write("\n".join(md) + "\n")
print("\n".join(md))
PY
