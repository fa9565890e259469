"""GPTQModel (PyPI `gptqmodel`, torch on CPU) side by side with pmq on one Llama checkpoint.

    peer.py quantize MODEL CALIB.jsonl... --samples N --seq L --out DIR     # GPTQModel, timed
    peer.py compare MODEL PMQ_FAKE_DIR PEER_DIR CALIB.jsonl... --samples N --seq L

`quantize` feeds GPTQModel exactly the token ids pmq uses: the first N texts of each
calibration file, tokenized with the model's tokenizer.json (tokenizers, truncation to L, no
padding), and the settings of `pmq quantize --method gptq` (4-bit, group 128, asymmetric, damp
0.01, no act-order, true-sequential, act_group_aware off, float32). Prints one JSON line.

`compare` dequantizes GPTQModel's checkpoint, reads pmq's fake-quant weights, runs the
full-precision model on the same tokens with hooks that accumulate every linear's
H = Σ x xᵀ, and reports per linear the output error tr((Q − W) H (Q − W)ᵀ) of both, and the
relative difference of the two dequantized weights.
"""
import argparse
import json
import os
import resource
import time

import torch


def token_lists(model_dir, files, n, seq):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(max_length=seq)
    out = []
    for f in files:
        texts = []
        with open(f, encoding="utf-8-sig") as fh:
            for line in fh:
                if line.strip():
                    texts.append(json.loads(line)["text"])
                if len(texts) == n:
                    break
        out += [e.ids for e in tok.encode_batch(texts)]
    return out


def quantize(a):
    from gptqmodel import GPTQModel, QuantizeConfig

    ids = token_lists(a.model, a.calib, a.samples, a.seq)
    calib = [{"input_ids": x, "attention_mask": [1] * len(x)} for x in ids]
    qcfg = QuantizeConfig(bits=4, group_size=128, sym=False, desc_act=False, damp_percent=0.01,
                          true_sequential=True, act_group_aware=False)
    t0 = time.perf_counter()
    model = GPTQModel.load(a.model, qcfg, dtype=torch.float32, device="cpu")
    t1 = time.perf_counter()
    model.quantize(calib, batch_size=a.batch_size)
    t2 = time.perf_counter()
    model.save(a.out)
    t3 = time.perf_counter()
    print(json.dumps({"peer": "gptqmodel", "tokens": sum(map(len, ids)), "sequences": len(ids),
                      "load_s": t1 - t0, "quantize_s": t2 - t1, "save_s": t3 - t2,
                      "torch_threads": torch.get_num_threads(),
                      "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def dequantize_gptq(d):
    """W [out, in] per quantized linear of a GPTQ checkpoint (v1 or v2 zero points)."""
    from safetensors.torch import load_file

    cfg = json.load(open(os.path.join(d, "quantize_config.json")))
    bits, v2 = cfg["bits"], cfg.get("checkpoint_format", "gptq") == "gptq_v2"
    st = {}
    for f in os.listdir(d):
        if f.endswith(".safetensors"):
            st.update(load_file(os.path.join(d, f)))
    per = 32 // bits
    mask = (1 << bits) - 1
    out = {}
    for k in st:
        if not k.endswith(".qweight"):
            continue
        p = k[: -len(".qweight")]
        qw, qz = st[k].to(torch.int64) & 0xFFFFFFFF, st[p + ".qzeros"].to(torch.int64) & 0xFFFFFFFF
        shifts = torch.arange(per) * bits
        q = ((qw.unsqueeze(1) >> shifts.view(1, -1, 1)) & mask).reshape(-1, qw.shape[1])  # [in, out]
        z = ((qz.unsqueeze(2) >> shifts.view(1, 1, -1)) & mask).reshape(qz.shape[0], -1)  # [groups, out]
        if not v2:
            z = z + 1
        s = st[p + ".scales"].to(torch.float64)
        g = st[p + ".g_idx"].to(torch.int64)
        w = s[g] * (q.to(torch.float64) - z[g].to(torch.float64))
        out[p] = w.T.contiguous()
    return out


def compare(a):
    from safetensors.torch import load_file
    from transformers import LlamaForCausalLM

    ids = token_lists(a.model, a.calib, a.samples, a.seq)
    peer = dequantize_gptq(a.peer)
    fake = {}
    for f in os.listdir(a.pmq):
        if f.endswith(".safetensors"):
            fake.update(load_file(os.path.join(a.pmq, f)))
    model = LlamaForCausalLM.from_pretrained(a.model, dtype=torch.float32).eval()
    hs, hooks = {}, []
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear) and name in peer:
            def hook(m, inp, _o, name=name):
                x = inp[0].reshape(-1, inp[0].shape[-1]).to(torch.float64)
                hs[name] = hs.get(name, 0) + x.T @ x
            hooks.append(mod.register_forward_hook(hook))
    with torch.no_grad():
        for x in ids:
            model(input_ids=torch.tensor([x]))
    rows = []
    for name in sorted(peer):
        w = dict(model.named_parameters())[name + ".weight"].detach().to(torch.float64)
        qp, qo = fake[name + ".weight"].to(torch.float64), peer[name]
        h = hs[name]

        def err(q):
            d = q - w
            return float(torch.sum((d @ h) * d))

        rows.append({"linear": name, "objective_pmq": err(qp), "objective_peer": err(qo),
                     "rel_weight_diff": float((qp - qo).norm() / w.norm()),
                     "identical_fraction": float(torch.isclose(qp, qo, rtol=1e-3, atol=1e-6).double().mean())})
    tot_p = sum(r["objective_pmq"] for r in rows)
    tot_o = sum(r["objective_peer"] for r in rows)
    print(json.dumps({"linears": len(rows), "objective_pmq": tot_p, "objective_peer": tot_o,
                      "objective_ratio_pmq_over_peer": tot_p / tot_o,
                      "mean_rel_weight_diff": sum(r["rel_weight_diff"] for r in rows) / len(rows),
                      "mean_identical_fraction": sum(r["identical_fraction"] for r in rows) / len(rows),
                      "per_linear": rows}))


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    q = sub.add_parser("quantize")
    q.add_argument("model")
    q.add_argument("calib", nargs="+")
    q.add_argument("--samples", type=int, required=True)
    q.add_argument("--seq", type=int, required=True)
    q.add_argument("--batch-size", type=int, default=16)
    q.add_argument("--out", required=True)
    c = sub.add_parser("compare")
    c.add_argument("model")
    c.add_argument("pmq")
    c.add_argument("peer")
    c.add_argument("calib", nargs="+")
    c.add_argument("--samples", type=int, required=True)
    c.add_argument("--seq", type=int, required=True)
    a = ap.parse_args()
    quantize(a) if a.cmd == "quantize" else compare(a)
