"""Checks pmq's GGUF files with gguf-py (llama.cpp's own Python reader, `pip install gguf`).

    python gguf_check.py vs-converter PMQ.gguf REF.gguf   # REF: convert_hf_to_gguf.py --outtype f32
                                                          # of pmq's fake-quant output of the same run
    python gguf_check.py vs-fake PMQ.gguf FAKE_DIR        # Llama (the converter cannot read our
                                                          # tiny models' tokenizer): HF names, q/k
                                                          # permutation done here, independently

Each prints one JSON line. `vs-converter` compares key by key (type and value; arrays element by
element) and tensor by tensor: same names and shapes, and every tensor of pmq's file, dequantized
by `gguf.quants.dequantize`, equal to the converter's f32 tensor (for quantized linears: pmq's
fake-quant weight, which the converter copied). `vs-fake` dequantizes every tensor of pmq's file
and compares it with the fake-quant safetensors under the converter's Llama naming.
"""

import json
import sys

import numpy as np


def reader(path):
    from gguf import GGUFReader
    return GGUFReader(path)


def field_value(f):
    """A metadata field as (type name, python value)."""
    from gguf import GGUFValueType
    types = [GGUFValueType(t).name for t in f.types]
    if not f.data:
        return types, None
    if types[0] == "ARRAY":
        if types[-1] == "STRING":
            return types, [bytes(f.parts[i]).decode("utf-8", "replace") for i in f.data]
        return types, [f.parts[i].tolist()[0] for i in f.data]
    if types[0] == "STRING":
        return types, bytes(f.parts[f.data[0]]).decode("utf-8", "replace")
    return types, f.parts[f.data[0]].tolist()[0]


def fields(r):
    return {k: field_value(f) for k, f in r.fields.items() if not k.startswith("GGUF.")}


def dequant(t):
    from gguf.quants import dequantize
    a = dequantize(t.data, t.tensor_type)
    return np.asarray(a, dtype=np.float32).reshape([int(d) for d in reversed(t.shape.tolist())])


def vs_converter(ours_path, ref_path):
    ours, ref = reader(ours_path), reader(ref_path)
    fo, fr = fields(ours), fields(ref)
    # keys that describe the file rather than the model
    own = {"general.file_type", "general.quantization_version"}
    missing = sorted(k for k in fr if k not in fo and k not in own)
    extra = sorted(k for k in fo if k not in fr and k not in own)
    differ = []
    for k in sorted(set(fo) & set(fr) - own):
        (ta, va), (tb, vb) = fo[k], fr[k]
        if ta != tb:
            differ.append(f"{k}: type {ta} vs {tb}")
        elif isinstance(va, float) or isinstance(vb, float):
            if not np.isclose(va, vb, rtol=1e-7, atol=0):
                differ.append(f"{k}: {va} vs {vb}")
        elif va != vb:
            show = (lambda v: v[:5] if isinstance(v, list) else v)
            differ.append(f"{k}: {show(va)} vs {show(vb)}")
    to = {t.name: t for t in ours.tensors}
    tr = {t.name: t for t in ref.tensors}
    types = {}
    worst, shape_diff = 0.0, []
    for name in sorted(set(to) & set(tr)):
        a, b = dequant(to[name]), dequant(tr[name])
        if a.shape != b.shape:
            shape_diff.append(f"{name}: {a.shape} vs {b.shape}")
            continue
        worst = max(worst, float(np.abs(a - b).max()))
        types[to[name].tensor_type.name] = types.get(to[name].tensor_type.name, 0) + 1
    print(json.dumps({
        "check": "vs-converter", "pmq": ours_path, "converter": ref_path,
        "keys_compared": len(set(fo) & set(fr) - own), "keys_missing": missing,
        "keys_extra": extra, "keys_differing": differ,
        "file_type": [fo.get("general.file_type", [None, None])[1],
                      fr.get("general.file_type", [None, None])[1]],
        "tensors": len(to), "tensors_missing": sorted(set(tr) - set(to)),
        "tensors_extra": sorted(set(to) - set(tr)), "shape_differences": shape_diff,
        "tensor_types": types, "max_abs_diff_dequantized": worst,
    }))


def llama_names(cfg):
    """GGUF name -> (HF name, permutation heads or None), as the converter maps Llama."""
    m = {"token_embd.weight": ("model.embed_tokens.weight", None),
         "output_norm.weight": ("model.norm.weight", None),
         "output.weight": ("lm_head.weight", None)}
    heads, kv = cfg["num_attention_heads"], cfg.get("num_key_value_heads", cfg["num_attention_heads"])
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}"
        for g, h, perm in [("attn_norm", "input_layernorm", None),
                           ("ffn_norm", "post_attention_layernorm", None),
                           ("attn_q", "self_attn.q_proj", heads), ("attn_k", "self_attn.k_proj", kv),
                           ("attn_v", "self_attn.v_proj", None),
                           ("attn_output", "self_attn.o_proj", None),
                           ("ffn_gate", "mlp.gate_proj", None), ("ffn_up", "mlp.up_proj", None),
                           ("ffn_down", "mlp.down_proj", None)]:
            m[f"blk.{i}.{g}.weight"] = (f"{p}.{h}.weight", perm)
    return m


def permute(w, n_head):
    """The converter's q/k permutation: rows [head, 2, half] -> [head, half, 2]."""
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def vs_fake(ours_path, fake_dir):
    from safetensors.numpy import load_file
    cfg = json.load(open(f"{fake_dir}/config.json"))
    st = {k: v.astype(np.float32) for k, v in load_file(f"{fake_dir}/model.safetensors").items()}
    names = llama_names(cfg)
    r = reader(ours_path)
    worst, compared, types, missing = 0.0, 0, {}, []
    for t in r.tensors:
        if t.name not in names:
            missing.append(t.name)
            continue
        hf, perm = names[t.name]
        if hf not in st and t.name == "output.weight":
            hf = "model.embed_tokens.weight"
        want = st[hf] if perm is None else permute(st[hf], perm)
        got = dequant(t)
        worst = max(worst, float(np.abs(got - want).max()))
        compared += 1
        types[t.tensor_type.name] = types.get(t.tensor_type.name, 0) + 1
    kv = {k: v[1] for k, v in fields(r).items() if not isinstance(v[1], list)}
    print(json.dumps({"check": "vs-fake", "pmq": ours_path, "tensors_compared": compared,
                      "tensors_unmapped": missing, "tensor_types": types,
                      "max_abs_diff_dequantized": worst, "metadata": kv}))


if __name__ == "__main__":
    {"vs-converter": vs_converter, "vs-fake": vs_fake}[sys.argv[1]](*sys.argv[2:])
