"""A tiny T5 with a real SentencePiece vocabulary, for checking pmq's T5 GGUF with llama.cpp.

    python gguf_t5.py make DIR CALIB.jsonl       # DIR/t5 (FLAN-T5-shaped model trained briefly,
                                                 # spiece.model trained on the calibration text)
                                                 # and DIR/t5-calib.jsonl ({"input","target"})
    python gguf_t5.py decode LLAMA_SIMPLE PMQ.gguf CONVERTER.gguf FAKE_DIR PROMPTS N
                                                 # greedy decoding: llama.cpp's llama-simple on
                                                 # pmq's GGUF and on the converter's f32 GGUF of
                                                 # the fake-quant model, transformers on the
                                                 # fake-quant model; one JSON line
    python gguf_t5.py golden GGUF OUT.json       # the tokenizer keys of a converter-made GGUF

llama.cpp's converter needs the SentencePiece model file (spiece.model) of a T5; it is trained
here with SentencePiece's own trainer (Unigram, T5's special ids: pad 0, eos 1, unk 2, no BOS).
"""

import json
import sys


def make(root, calib):
    import os
    import shutil

    import sentencepiece as spm
    import torch
    from transformers import T5Config, T5ForConditionalGeneration, T5Tokenizer

    texts = [json.loads(line)["text"] for line in open(calib)]
    os.makedirs(f"{root}/spm", exist_ok=True)
    with open(f"{root}/spm/corpus.txt", "w") as f:
        f.write("\n".join(texts) + "\n")
    spm.SentencePieceTrainer.train(
        input=f"{root}/spm/corpus.txt", model_prefix=f"{root}/spm/spiece", vocab_size=512,
        model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
        character_coverage=1.0, minloglevel=2)
    sp = spm.SentencePieceProcessor(model_file=f"{root}/spm/spiece.model")
    out = f"{root}/t5"
    torch.manual_seed(0)
    cfg = T5Config(vocab_size=sp.get_piece_size(), d_model=256, d_kv=64, d_ff=512, num_layers=2,
                   num_heads=4, feed_forward_proj="gated-gelu", decoder_start_token_id=0,
                   pad_token_id=0, eos_token_id=1, tie_word_embeddings=False, n_positions=512,
                   dropout_rate=0.0)
    model = T5ForConditionalGeneration(cfg)
    with torch.no_grad():  # an untied output layer initialised at the scale of the others
        model.lm_head.weight.normal_(0.0, cfg.d_model ** -0.5)
    # a few hundred steps of training on the pairs (copy the first words of the input), so that
    # greedy decoding produces varied text instead of one repeated token of a random model
    os.makedirs(out, exist_ok=True)
    shutil.copy(f"{root}/spm/spiece.model", f"{out}/spiece.model")
    tok = T5Tokenizer.from_pretrained(out, extra_ids=0)
    pairs = [(t, " ".join(t.split()[:8])) for t in texts]
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    g = torch.Generator().manual_seed(0)
    for step in range(int(os.environ.get("PMQ_T5_STEPS", "800"))):
        idx = torch.randint(len(pairs), (16,), generator=g).tolist()
        enc = tok([pairs[i][0] for i in idx], return_tensors="pt", padding=True, truncation=True,
                  max_length=64)
        lab = tok([pairs[i][1] for i in idx], return_tensors="pt", padding=True).input_ids
        lab[lab == tok.pad_token_id] = -100
        loss = model(**enc, labels=lab).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 100 == 0:
            print(f"step {step} loss {loss.item():.3f}", file=sys.stderr)
    model.eval()
    model.save_pretrained(out)
    # transformers converted the SentencePiece model found in the directory (its Unigram
    # vocabulary, normalizer and Metaspace pre-tokenizer) into the tokenizer saved here
    tok.save_pretrained(out)
    with open(f"{root}/t5-calib.jsonl", "w") as f:
        for t in texts:
            words = t.split()
            f.write(json.dumps({"input": t, "target": " ".join(words[:8])}) + "\n")


def llama_simple(binary, gguf, prompt, n):
    import subprocess
    out = subprocess.run([binary, "-m", gguf, "-n", str(n), prompt], capture_output=True,
                         text=True, check=True)
    return out.stdout.rstrip("\n")


def decode(binary, pmq_gguf, conv_gguf, fake_dir, prompts, n):
    """llama-simple prints the prompt's pieces, then the pieces it decodes greedily (decoder
    positions while n_pos + 1 < n_prompt + N, stopping at EOS); transformers decodes the same
    number of tokens on the fake-quant model and its output is printed the same way (pieces with
    the SentencePiece space mark as a space, special tokens as their text)."""
    import torch
    from transformers import AutoTokenizer, T5ForConditionalGeneration
    n = int(n)
    tok = AutoTokenizer.from_pretrained(fake_dir)
    model = T5ForConditionalGeneration.from_pretrained(fake_dir, dtype=torch.float32).eval()
    text = (lambda ids: "".join(tok.convert_ids_to_tokens(ids)).replace("\u2581", " "))
    rows = []
    for p in open(prompts).read().splitlines():
        ids = tok(p, return_tensors="pt").input_ids
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=ids.shape[1] + n - 1, do_sample=False,
                                 num_beams=1, min_new_tokens=0)
        gen = out[0].tolist()[1:]
        if tok.eos_token_id in gen:
            gen = gen[:gen.index(tok.eos_token_id)]
        hf = text(ids[0].tolist()) + text(gen)
        rows.append({"hf": hf, "pmq": llama_simple(binary, pmq_gguf, p, n),
                     "converter": llama_simple(binary, conv_gguf, p, n), "generated": len(gen)})

    def agree(a, b):
        same = sum(r[a] == r[b] for r in rows)
        return f"{same}/{len(rows)}"
    print(json.dumps({"check": "t5-greedy-decoding", "pmq": pmq_gguf, "prompts": len(rows),
                      "tokens_per_prompt": [r["generated"] for r in rows],
                      "pmq_vs_converter_f32": agree("pmq", "converter"),
                      "converter_f32_vs_transformers": agree("converter", "hf"),
                      "pmq_vs_transformers": agree("pmq", "hf"), "examples": rows[:2]}))


def golden(path, out):
    from gguf import GGUFReader
    r = GGUFReader(path)
    res = {}
    for k, f in r.fields.items():
        if not k.startswith("tokenizer."):
            continue
        if k == "tokenizer.ggml.precompiled_charsmap":
            import hashlib
            data = bytes(f.parts[f.data[0]]) if len(f.data) == 1 else bytes(
                int(f.parts[i][0]) for i in f.data)
            res[k] = {"len": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        elif len(f.data) > 1 or f.types[0] == 9:  # arrays
            if f.types[-1] == 8:
                res[k] = [bytes(f.parts[i]).decode("utf-8") for i in f.data]
            else:
                res[k] = [f.parts[i].tolist()[0] for i in f.data]
        elif f.types[0] == 8:
            res[k] = bytes(f.parts[f.data[0]]).decode("utf-8")
        else:
            res[k] = f.parts[f.data[0]].tolist()[0]
    json.dump(res, open(out, "w"), indent=0)


if __name__ == "__main__":
    {"make": make, "decode": decode, "golden": golden}[sys.argv[1]](*sys.argv[2:])
