"""RegMean as FusionBench computes it, in torch + transformers, to check pmq's `--method regmean`.

Written from the method's definition (Jin et al. 2023) and FusionBench's documented semantics:
forward hooks on every nn.Linear of each expert's encoder collect the running mean of x xᵀ over
the tokens of its own task's samples; off-diagonal entries are scaled by the ratio; each linear
becomes (Σ W_i G̃_i)(Σ G̃_i)⁻¹ and every other parameter the experts' mean. Samples are run one
at a time (no padding: FusionBench's hooks would count pad tokens, pmq does not).

usage: regmean_ref.py OUT_JSON PMQ_MERGED PMQ_GRAMS_DIR RATIO MAXLEN N EXPERT=CALIB...
"""
import json
import sys

import torch
from safetensors import safe_open
from safetensors.torch import load_file
from transformers import AutoTokenizer, BertModel

torch.set_grad_enabled(False)
out_json, pmq_merged, pmq_grams, ratio, maxlen, n = sys.argv[1:7]
ratio, maxlen, n = float(ratio), int(maxlen), int(n)
pairs = [a.split("=", 1) for a in sys.argv[7:]]


def grams(model_dir, calib):
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = BertModel.from_pretrained(model_dir, dtype=torch.float32).eval()
    acc, count, hooks = {}, {}, []
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear) and name.startswith("encoder."):
            def hook(m, inp, _out, name=name):
                x = inp[0].detach().reshape(-1, inp[0].shape[-1]).double()
                k = x.shape[0]
                g = x.T @ x
                if name not in acc:
                    acc[name], count[name] = g / k, k
                else:  # FusionBench's running mean over tokens
                    acc[name] = (acc[name] * count[name] + g) / (count[name] + k)
                    count[name] += k
            hooks.append(mod.register_forward_hook(hook))
    texts = [json.loads(l)["text"] for l in open(calib) if l.strip()][:n]
    for t in texts:
        enc = tok(t, truncation=True, max_length=maxlen, return_tensors="pt")
        model(**enc)
    for h in hooks:
        h.remove()
    return {k + ".weight": v for k, v in acc.items()}, count, model.state_dict()


def reduce(g):
    eye = torch.eye(g.shape[0], dtype=g.dtype)
    return g * (ratio + (1 - ratio) * eye)


results = [grams(e, c) for e, c in pairs]
states = [r[2] for r in results]
ref = {}
for name in states[0]:
    ws = [s[name].double() for s in states]
    if name in results[0][0]:
        gs = [reduce(r[0][name]) for r in results]
        s_g = sum(gs)
        s_wg = sum(w @ g for w, g in zip(ws, gs))
        # W Σ G̃ = Σ W G̃  →  Σ G̃ Wᵀ = (Σ W G̃)ᵀ
        ref[name] = torch.linalg.solve(s_g, s_wg.T).T
    else:
        ref[name] = sum(ws) / len(ws)

pmq = load_file(f"{pmq_merged}/model.safetensors")
prefix = "" if any(k in pmq for k in ref) else "bert."


def rel(a, b):
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


worst_linear = max(rel(pmq[prefix + k].double(), ref[k]) for k in results[0][0])
others = [k for k in ref if k not in results[0][0] and prefix + k in pmq]
worst_other = max(rel(pmq[prefix + k].double(), ref[k]) for k in others)
gram_worst = 0.0
for i, r in enumerate(results):
    path = f"{pmq_grams}/expert-{i + 1}.safetensors"
    f = load_file(path)
    with safe_open(path, "pt") as h:
        linears = json.loads(h.metadata()["pmq_gram_linears"])
    for k, g in r[0].items():
        gram_worst = max(gram_worst, rel(f[linears[prefix + k]].double(), g))
summary = {
    "experts": [e for e, _ in pairs],
    "samples_per_task": n,
    "max_seq_len": maxlen,
    "ratio": ratio,
    "linears": len(results[0][0]),
    "other_tensors": len(others),
    "max_rel_diff_linears": worst_linear,
    "max_rel_diff_other_tensors": worst_other,
    "max_rel_diff_grams": gram_worst,
    "tokens_per_task": [sum(r[1].values()) // len(r[1]) for r in results],
}
json.dump(summary, open(out_json, "w"), indent=1)
print(json.dumps(summary))
