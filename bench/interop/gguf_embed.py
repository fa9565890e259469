"""Sentence embeddings of BERT GGUF files computed by llama.cpp itself (`llama-embedding`, mean
pooling as the file says), compared with each other and with pmq's fake-quant model in
transformers (mean-pooled last hidden states, as sentence-transformers' MiniLM pools).

    python gguf_embed.py LLAMA_EMBEDDING PMQ.gguf REF.gguf FAKE_DIR

REF.gguf: llama.cpp's converter's f32 GGUF of FAKE_DIR (pmq's fake-quant output of the same run),
so PMQ vs REF isolates pmq's GGUF (quantized blocks in llama.cpp's kernels vs f32 weights of the
same values), and PMQ vs transformers is what a user sees between the two clients. Prints one
JSON line with the minimum and mean cosines over the sentences.
"""

import json
import subprocess
import sys

import numpy as np

SENTENCES = [
    "the quick brown fox jumps over the lazy dog",
    "stock markets fell sharply today after the announcement",
    "this movie was a wonderful surprise from start to finish",
    "please reply to confirm the meeting on thursday",
    "the patient was given antibiotics for the infection",
    "win a free cruise now, click the link below",
    "how do i reset my password on the new phone",
    "the referee stopped the match in the second half",
]


def llama_embed(binary, gguf):
    out = subprocess.run(
        [binary, "-m", gguf, "-p", "\n".join(SENTENCES), "--pooling", "mean",
         "--embd-output-format", "json", "-t", "2"],
        check=True, capture_output=True, text=True).stdout
    # the JSON object first; anything printed after it is ignored
    data = json.JSONDecoder().raw_decode(out[out.index("{"):])[0]["data"]
    return np.array([d["embedding"] for d in data], dtype=np.float64)


def hf_embed(fake_dir):
    import torch
    from transformers import AutoModel, AutoTokenizer
    tok = AutoTokenizer.from_pretrained(fake_dir)
    model = AutoModel.from_pretrained(fake_dir, dtype=torch.float32).eval()
    enc = tok(SENTENCES, return_tensors="pt", padding=True)
    with torch.no_grad():
        h = model(**enc).last_hidden_state
    m = enc["attention_mask"].unsqueeze(-1).float()
    return ((h * m).sum(1) / m.sum(1)).double().numpy()


def cosines(a, b):
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(1)


def main(binary, pmq_gguf, ref_gguf, fake_dir):
    ours = llama_embed(binary, pmq_gguf)
    ref = llama_embed(binary, ref_gguf)
    hf = hf_embed(fake_dir)
    res = {"check": "llama-embedding", "pmq": pmq_gguf, "sentences": len(SENTENCES)}
    for name, other in [("vs_converter_f32_in_llama_cpp", ref), ("vs_transformers_fake", hf),
                        ("converter_f32_vs_transformers_fake", None)]:
        c = cosines(ref, hf) if other is None else cosines(ours, other)
        res[name] = {"min_cosine": float(c.min()), "mean_cosine": float(c.mean())}
    print(json.dumps(res))


if __name__ == "__main__":
    main(*sys.argv[1:])
