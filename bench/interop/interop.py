"""Loads pmq's GPTQ checkpoints in transformers (+ optimum, gptqmodel kernels on torch-CPU) and
compares them with pmq's fake-quant checkpoints of the same run (plain HF checkpoints whose
weights are the dequantized GPTQ weights, bit for bit).

    python interop.py make-tiny DIR              # tiny random Llama, T5, CLIP vision (transformers)
    python interop.py compare FAMILY GPTQ_DIR FAKE_DIR  # prints one JSON line

Both checkpoints are loaded with dtype bfloat16 (GPTQModel's CPU float32 kernel drops the zero
points of asymmetric checkpoints — its own included — so float32 is not a usable client path;
see README) and run on the same inputs; the fake-quant model in bfloat16 is the reference.
"""

import json
import sys

import torch


def make_tiny(root):
    from transformers import (CLIPVisionConfig, CLIPVisionModel, LlamaConfig, LlamaForCausalLM,
                              T5Config, T5ForConditionalGeneration)
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(vocab_size=30522, hidden_size=256, intermediate_size=512,
                                 num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                 max_position_embeddings=256)).save_pretrained(f"{root}/llama")
    T5ForConditionalGeneration(T5Config(vocab_size=30522, d_model=256, d_kv=64, d_ff=512,
                                        num_layers=2, num_heads=4, feed_forward_proj="gated-gelu",
                                        decoder_start_token_id=0)).save_pretrained(f"{root}/t5")
    CLIPVisionModel(CLIPVisionConfig(hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                                     num_attention_heads=4, image_size=64, patch_size=16)
                    ).save_pretrained(f"{root}/clip")


def inputs(family, tok_dir):
    torch.manual_seed(1)
    if family == "clip":
        return {"pixel_values": torch.randn(4, 3, 64, 64)}
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(tok_dir)
    texts = ["the quick brown fox jumps over the lazy dog", "stock markets fell sharply today",
             "this movie was a wonderful surprise", "please reply to confirm the meeting"]
    enc = tok(texts, return_tensors="pt", padding=True)
    if family == "t5":
        enc["decoder_input_ids"] = enc["input_ids"][:, :6]
    return dict(enc)


def load(family, path, quantized):
    from transformers import (AutoModel, CLIPVisionModel, LlamaForCausalLM,
                              T5ForConditionalGeneration)
    cls = {"bert": AutoModel, "llama": LlamaForCausalLM, "t5": T5ForConditionalGeneration,
           "clip": CLIPVisionModel}[family]
    kw = {"dtype": torch.bfloat16}
    if quantized:
        kw["device_map"] = "cpu"
    return cls.from_pretrained(path, **kw).eval()


def output(family, model, x):
    with torch.no_grad():
        out = model(**x)
    if family in ("llama", "t5"):
        return out.logits.float()
    if family == "clip":
        return out.pooler_output.float()
    mask = x["attention_mask"].unsqueeze(-1).float()
    return (out.last_hidden_state.float() * mask).sum(1) / mask.sum(1)


def compare(family, gptq_dir, fake_dir):
    x = inputs(family, fake_dir)
    q = load(family, gptq_dir, True)
    kinds = sorted({type(m).__name__ for m in q.modules() if "Quant" in type(m).__name__
                    or "Linear" in type(m).__name__})
    replaced = sum(1 for m in q.modules() if hasattr(m, "qweight"))
    a = output(family, q, x)
    b = output(family, load(family, fake_dir, False), x)
    cos = torch.nn.functional.cosine_similarity(a.flatten(1), b.flatten(1), dim=1)
    res = {"family": family, "quantized_linears_loaded": replaced, "module_kinds": kinds,
           "min_cosine": cos.min().item(),
           "max_abs_diff_rel": ((a - b).abs().max() / b.abs().max()).item()}
    if family in ("llama", "t5"):
        res["argmax_agreement"] = (a.argmax(-1) == b.argmax(-1)).float().mean().item()
    print(json.dumps(res))


if __name__ == "__main__":
    if sys.argv[1] == "make-tiny":
        make_tiny(sys.argv[2])
    else:
        compare(*sys.argv[2:5])
