"""Summarises bench/pipeline/run.sh: a JSON list and a markdown table of the runs, and the
agreement of their quantized weights (fraction of identical values over the linears pmq
quantized), read from the fake-quant safetensors with the standard library only."""
import array
import json
import os
import struct
import sys

work, results, out_dir = sys.argv[1:4]
runs = [json.loads(l) for l in open(results) if l.strip()]


def tensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        base = 8 + n
        out = {}
        for name, info in header.items():
            if name == "__metadata__" or info["dtype"] != "F32":
                continue
            a, b = info["data_offsets"]
            f.seek(base + a)
            arr = array.array("f")
            arr.frombytes(f.read(b - a))
            out[name] = arr
        return out


def linears(run):
    rep = json.load(open(os.path.join(work, f"out-{run}", "pmq_report.json")))
    return [l["name"] + ".weight" for l in rep["linears"]]


def agreement(a, b):
    """Fraction of identical quantized weights, over the model and per block."""
    ta = tensors(os.path.join(work, f"out-{a}", "model.safetensors"))
    tb = tensors(os.path.join(work, f"out-{b}", "model.safetensors"))
    rep = json.load(open(os.path.join(work, f"out-{a}", "pmq_report.json")))
    same = total = 0
    blocks = {}
    for l in rep["linears"]:
        x, y = ta[l["name"] + ".weight"], tb[l["name"] + ".weight"]
        n = sum(1 for u, v in zip(x, y) if u == v)
        same, total = same + n, total + len(x)
        bs, bt = blocks.get(l["block"], (0, 0))
        blocks[l["block"]] = (bs + n, bt + len(x))
    return {
        "model": same / max(total, 1),
        "per_block": [blocks[k][0] / blocks[k][1] for k in sorted(blocks)],
    }


def arithmetic_floor(run):
    """The multiply-adds of the run's non-solve work over those of the block linears' plain
    forward, from the report's linears (shapes, tokens per task, groups): what the non-solve
    figure would read if every product ran at the speed of the forward's own GEMMs and the
    attention, the element-wise operations and the report figures cost nothing.

    Per block, with F the linears' multiply-adds over all tokens and L those of its last group
    (the last group's output feeds nothing in the block):
    - passes: true-sequential with the forward cache computes each linear once on the partly
      quantized block (F; without the cache, group g's capture reruns groups 0..g−1 and a full
      quantized forward follows); `--no-true-sequential` captures every input from one pass of
      the unquantized block (F − L), then propagates through the quantized block (F). The last
      block's outputs are not computed.
    - Hessians: the lower triangle of `XᵀX` of each group's input, n·d²/2.
    - expert fold (experts given): `Δ_i H_i` per task and linear, K·rows·cols².
    """
    rep = json.load(open(os.path.join(work, f"out-{run['name']}", "pmq_report.json")))
    st = rep["settings"]
    experts = len(st.get("experts") or [])
    true_seq = st.get("true_sequential", True)
    cache = "--forward-cache-mib 0" not in run.get("flags", "")
    blocks = {}
    for l in rep["linears"]:
        n = sum(l["tokens"])
        b = blocks.setdefault(l["block"], {})
        g = b.setdefault(l["group"], {"macs": 0, "cols": l["cols"], "tokens": n, "fold": 0})
        g["macs"] += l["rows"] * l["cols"] * n
        g["fold"] += experts * l["rows"] * l["cols"] ** 2
    last_block = max(blocks)
    unit = passes = hessians = fold = 0
    for bi, groups in blocks.items():
        order = [groups[k] for k in sorted(groups)]
        f = sum(g["macs"] for g in order)
        last = order[-1]["macs"]
        unit += f
        tail = 0 if bi == last_block else last
        if not true_seq:
            passes += (f - last) + (f if bi != last_block else 0)
        elif cache:
            passes += f - last + tail
        else:
            prefix = 0
            for g in order:
                passes += prefix
                prefix += g["macs"]
            passes += f if bi != last_block else 0
        hessians += sum(g["tokens"] * g["cols"] ** 2 / 2 for g in order)
        fold += sum(g["fold"] for g in order)
    return {"passes": passes / unit, "hessians": hessians / unit, "fold": fold / unit,
            "total": (passes + hessians + fold) / unit}


for r in runs:
    r["arithmetic_floor"] = arithmetic_floor(r)

names = {r["name"] for r in runs}
pairs = [
    ("gptq-k8", "gptq-k8-no-true-seq"),
    ("epmq-k8", "epmq-k8-per-task-deviation"),
    ("gptq-k8", "baseline-gptq-k8"),
    ("gptq-k8-no-true-seq", "baseline-gptq-k8-no-true-seq"),
    ("epmq-k8", "baseline-epmq-k8"),
    ("gptq-k8", "gptq-k8-no-forward-cache"),
    ("gptq-k8", "gptq-k8-plain"),
    ("gptq-k8-no-true-seq", "gptq-k8-no-true-seq-plain"),
]
agree = {f"{a} vs {b}": agreement(a, b) for a, b in pairs if a in names and b in names}
json.dump({"runs": runs, "identical_weights": agree}, open(os.path.join(out_dir, "results.json"), "w"), indent=1)

lines = [
    "| run | K | wall s | pipeline s | peak RSS MiB | forward | Hessians | fold | solve | metrics | propagate | non-solve / block forward | arithmetic floor | Σ objective |",
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
]
for r in runs:
    p = r.get("phases") or {}
    g = lambda k: f"{p[k]:.1f}" if k in p else "–"
    ratio = f"{p['non_solve_block_forwards']:.2f}" if "non_solve_block_forwards" in p else "–"
    lines.append(
        f"| {r['name']} | {r['k']} | {r['wall_s']:.1f} | {r['pipeline_s']:.1f} | "
        f"{(r['peak_rss_mib'] or 0):.0f} | {g('forward_s')} | {g('hessian_s')} | {g('fold_s')} | "
        f"{g('solve_s')} | {g('metrics_s')} | {g('propagate_s')} | {ratio} | "
        f"{r['arithmetic_floor']['total']:.2f} | {r['objective_sum']:.4e} |"
    )
lines.append("")
lines.append("| outputs compared | identical quantized weights | per block |")
lines.append("|---|---|---|")
for k, v in agree.items():
    per = " / ".join(f"{100 * b:.1f}" for b in v["per_block"])
    lines.append(f"| {k} | {100 * v['model']:.2f} % | {per} |")
open(os.path.join(out_dir, "results.md"), "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
