"""Perplexity of pmq's fake-quant Llama in transformers, scored exactly as llama.cpp's
`llama-perplexity` scores a GGUF: the same token ids (from `llama-tokenize` on the GGUF), chunks
of N_CTX tokens whose first token is replaced by BOS when the vocabulary adds one, and the
negative log-likelihood of the second half of every chunk (positions N_CTX/2 .. N_CTX−2 predict
the next token).

    python gguf_ppl.py FAKE_DIR TOKENS_FILE N_CTX BOS_ID|-1 [N_CHUNKS]

TOKENS_FILE holds what `llama-tokenize --ids` printed (a Python list of ids). Prints one JSON line.
"""

import ast
import json
import math
import sys

import torch


def main(fake_dir, tokens_file, n_ctx, bos, n_chunks=None):
    from transformers import LlamaForCausalLM
    torch.set_num_threads(2)
    text = open(tokens_file).read()
    ids = ast.literal_eval(text[text.index("["):text.rindex("]") + 1])
    n_ctx, bos = int(n_ctx), int(bos)
    chunks = len(ids) // n_ctx
    if n_chunks is not None:
        chunks = min(chunks, int(n_chunks))
    model = LlamaForCausalLM.from_pretrained(fake_dir, dtype=torch.float32).eval()
    first = n_ctx // 2
    nll, count = 0.0, 0
    for c in range(chunks):
        chunk = list(ids[c * n_ctx:(c + 1) * n_ctx])
        targets = list(chunk)
        if bos >= 0:
            chunk[0] = bos  # what the model reads; the scored targets are the original tokens
        with torch.no_grad():
            logits = model(torch.tensor([chunk])).logits[0].double()
        logp = torch.log_softmax(logits, dim=-1)
        for j in range(first, n_ctx - 1):
            nll -= logp[j, targets[j + 1]].item()
            count += 1
    print(json.dumps({"check": "ppl-transformers-fake", "tokens": len(ids), "n_ctx": n_ctx,
                      "chunks": chunks, "scored": count, "ppl": math.exp(nll / count)}))


if __name__ == "__main__":
    main(*sys.argv[1:])
