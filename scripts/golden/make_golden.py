"""Golden fixtures from HF transformers itself, for pmq-models' parity tests.

Makes tiny random checkpoints of every family pmq runs, in the layouts transformers 4 and 5
write, runs them in transformers (torch, CPU, float32) on fixed inputs and records what HF
computes: hidden states after every block, the head's output (BERT last hidden state, CLIP
pooled output, Llama / T5 logits) and, for CLIP, the pixel tensor of an image that needs
resizing. Everything goes to crates/pmq-models/tests/golden/<case>/:

    config.json, model.safetensors (+ preprocessor_config.json, image.png)  the checkpoint
    golden.safetensors   inputs (i64 ids, masks) and HF's outputs (f32)
    case.json            what the case is about, transformers/torch versions

The transformers-4 layouts are made from the same weights by rewriting what transformers 5
changed (config keys, tensor prefixes), so both layouts must give the same numbers.
Run by scripts/golden.sh (own venv); not part of CI, whose tests read the committed files.
"""

import json
import os
import shutil
import sys

import numpy as np
import torch
import transformers
from PIL import Image
from safetensors.torch import load_file, save_file

OUT = sys.argv[1] if len(sys.argv) > 1 else "crates/pmq-models/tests/golden"
torch.manual_seed(0)
np.random.seed(0)


def reset(case):
    d = os.path.join(OUT, case)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    return d


def write_case(d, about, tensors):
    save_file({k: v.contiguous() for k, v in tensors.items()}, os.path.join(d, "golden.safetensors"))
    meta = {
        "about": about,
        "transformers": transformers.__version__,
        "torch": torch.__version__,
    }
    with open(os.path.join(d, "case.json"), "w") as f:
        json.dump(meta, f, indent=1)


def edit_config(d, fn):
    p = os.path.join(d, "config.json")
    c = json.load(open(p))
    fn(c)
    json.dump(c, open(p, "w"), indent=2)


def randomize(model, std=0.2):
    # HF's init makes many weights tiny (or zero biases); random everything so every weight matters
    g = torch.Generator().manual_seed(1234)
    with torch.no_grad():
        for _, p in model.named_parameters():
            if p.dim() == 1 and torch.all(p == 1):  # norm weights around 1
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(std * torch.randn(p.shape, generator=g))


def save(model, d):
    model.save_pretrained(d, safe_serialization=True)
    for extra in ("generation_config.json",):
        p = os.path.join(d, extra)
        if os.path.exists(p):
            os.remove(p)


IDS = torch.tensor([[5, 17, 33, 2, 41, 9, 60], [7, 3, 28, 50, 0, 0, 0]], dtype=torch.long)
MASK = torch.tensor([[1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0, 0]], dtype=torch.long)


def hidden_stack(hs):
    return torch.stack([h.float() for h in hs])


# ---------------------------------------------------------------- BERT
def bert():
    from transformers import BertConfig, BertModel

    cfg = BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=32, type_vocab_size=2)
    m = BertModel(cfg, add_pooling_layer=False).eval()
    randomize(m)
    d = reset("bert-v5")
    save(m, d)
    m = BertModel.from_pretrained(d, add_pooling_layer=False).eval()
    with torch.no_grad():
        o = m(input_ids=IDS, attention_mask=MASK, output_hidden_states=True)
    write_case(d, "BertModel, transformers-5 save", {
        "input_ids": IDS, "attention_mask": MASK,
        "hidden_states": hidden_stack(o.hidden_states), "head": o.last_hidden_state,
    })
    bert_v4(d)


def bert_v4(v5_dir):
    """The same BERT as a transformers-4 `BertFor*` head checkpoint saves its encoder: tensors
    under `bert.`, a 4.x version string; transformers loads it into BertModel unchanged."""
    from transformers import BertModel

    d = reset("bert-v4")
    for f in ("config.json",):
        shutil.copy(os.path.join(v5_dir, f), d)
    sd = load_file(os.path.join(v5_dir, "model.safetensors"))
    save_file({"bert." + k: v for k, v in sd.items()}, os.path.join(d, "model.safetensors"),
              metadata={"format": "pt"})
    edit_config(d, lambda c: c.update({"transformers_version": "4.46.0"}))
    m = BertModel.from_pretrained(d, add_pooling_layer=False).eval()
    with torch.no_grad():
        o = m(input_ids=IDS, attention_mask=MASK, output_hidden_states=True)
    write_case(d, "BertModel weights under `bert.` (a transformers-4 head checkpoint's layout)", {
        "input_ids": IDS, "attention_mask": MASK,
        "hidden_states": hidden_stack(o.hidden_states), "head": o.last_hidden_state,
    })


# ---------------------------------------------------------------- Llama
def llama(case, rope, about, v4=False, tie=False, max_pos=64):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=max_pos,
                      rope_parameters=rope, tie_word_embeddings=tie, rms_norm_eps=1e-6)
    m = LlamaForCausalLM(cfg).eval()
    randomize(m)
    if tie:
        m.tie_weights()
    # positions far out, so the scaling of low frequencies shows: ids are long
    ids = torch.randint(0, 64, (2, 40), generator=torch.Generator().manual_seed(5))
    mask = torch.ones_like(ids)
    mask[1, 30:] = 0
    d = reset(case)
    save(m, d)
    if v4:
        def to_v4(c):
            rp = c.pop("rope_parameters")
            c["rope_theta"] = rp.pop("rope_theta")
            rt = rp.get("rope_type", "default")
            if rt != "default":
                c["rope_scaling"] = rp
            c["transformers_version"] = "4.46.0"
        edit_config(d, to_v4)
    # what transformers computes for the checkpoint as saved (loading included)
    m = LlamaForCausalLM.from_pretrained(d).eval()
    with torch.no_grad():
        o = m(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    write_case(d, about, {
        "input_ids": ids, "attention_mask": mask,
        "hidden_states": hidden_stack(o.hidden_states), "head": o.logits,
    })


# ---------------------------------------------------------------- CLIP vision
def clip():
    from transformers import CLIPVisionConfig, CLIPVisionModel
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    cfg = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=4, image_size=32, patch_size=8, projection_dim=16)
    m = CLIPVisionModel(cfg).eval()
    randomize(m, std=0.1)
    proc = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    # an image that needs resizing (and cropping): 50 × 37, smooth plus noise
    rng = np.random.default_rng(3)
    y, x = np.mgrid[0:37, 0:50]
    img = np.stack([(x * 5) % 256, (y * 7) % 256, (x * y) % 256], -1).astype(np.int32)
    img = np.clip(img + rng.integers(-40, 40, img.shape), 0, 255).astype(np.uint8)
    image = Image.fromarray(img, "RGB")
    pix = proc(images=[image], return_tensors="pt")["pixel_values"]
    for case, about in (("clip-vision-v5", "CLIPVisionModel, transformers-5 save (tensors without `vision_model.`)"),
                        ("clip-vision-v4", "CLIPVisionModel, transformers-4 layout (tensors under `vision_model.`)")):
        d = reset(case)
        save(m, d)
        proc.save_pretrained(d)
        image.save(os.path.join(d, "image.png"))
        p = os.path.join(d, "model.safetensors")
        sd = load_file(p)
        has_prefix = all(k.startswith("vision_model.") for k in sd)
        if case.endswith("v4") and not has_prefix:
            sd = {"vision_model." + k: v for k, v in sd.items()}
        if case.endswith("v5") and has_prefix:
            sd = {k[len("vision_model."):]: v for k, v in sd.items()}
        save_file(sd, p, metadata={"format": "pt"})
        m2 = CLIPVisionModel.from_pretrained(d).eval()
        with torch.no_grad():
            o = m2(pixel_values=pix, output_hidden_states=True)
        write_case(d, about, {"pixel_values": pix, "hidden_states": hidden_stack(o.hidden_states),
                              "head": o.pooler_output})


# ---------------------------------------------------------------- T5
def t5(case, ff, tie, about):
    from transformers import T5Config, T5ForConditionalGeneration

    cfg = T5Config(vocab_size=64, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2,
                   num_heads=4, feed_forward_proj=ff, tie_word_embeddings=tie,
                   relative_attention_num_buckets=8, relative_attention_max_distance=16)
    m = T5ForConditionalGeneration(cfg).eval()
    randomize(m)
    d = reset(case)
    save(m, d)
    st = load_file(os.path.join(d, "model.safetensors"))
    if tie:
        st.pop("lm_head.weight", None)
    else:
        # FLAN-T5 checkpoints carry an lm_head of their own (transformers 5 ties T5's head at
        # creation, so give it one, as a real checkpoint has)
        g = torch.Generator().manual_seed(99)
        st["lm_head.weight"] = 0.2 * torch.randn(st["shared.weight"].shape, generator=g)
    save_file(st, os.path.join(d, "model.safetensors"), metadata={"format": "pt"})
    if case.endswith("v4"):
        def to_v4(c):
            c["tie_word_embeddings"] = c.pop("scale_decoder_outputs")
            c["transformers_version"] = "4.46.0"
        edit_config(d, to_v4)
    dec = torch.tensor([[0, 4, 9, 22, 13], [0, 31, 8, 0, 0]], dtype=torch.long)
    dmask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], dtype=torch.long)
    m = T5ForConditionalGeneration.from_pretrained(d).eval()
    with torch.no_grad():
        o = m(input_ids=IDS, attention_mask=MASK, decoder_input_ids=dec, decoder_attention_mask=dmask,
              output_hidden_states=True)
    write_case(d, about, {
        "input_ids": IDS, "attention_mask": MASK,
        "decoder_input_ids": dec, "decoder_attention_mask": dmask,
        "encoder_hidden_states": hidden_stack(o.encoder_hidden_states),
        "decoder_hidden_states": hidden_stack(o.decoder_hidden_states),
        "head": o.logits,
    })


if __name__ == "__main__":
    bert()
    l3 = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
          "high_freq_factor": 4.0, "original_max_position_embeddings": 16}
    llama("llama-llama3-v5", dict(l3), "Llama, llama3 RoPE θ=500000, transformers-5 save (rope_parameters only)")
    llama("llama-llama3-v4", dict(l3), "Llama, llama3 RoPE θ=500000, transformers-4 keys (rope_theta, rope_scaling)", v4=True)
    llama("llama-default-v5", {"rope_type": "default", "rope_theta": 10000.0}, "Llama, plain RoPE, tied embeddings, transformers-5 save", tie=True)
    llama("llama-linear-v5", {"rope_type": "linear", "rope_theta": 10000.0, "factor": 2.0}, "Llama, linear RoPE scaling")
    llama("llama-dynamic-v5", {"rope_type": "dynamic", "rope_theta": 10000.0, "factor": 2.0},
          "Llama, dynamic NTK RoPE (40 positions > max_position_embeddings = 32: grown base)", max_pos=32)
    llama("llama-yarn-v5", {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0, "original_max_position_embeddings": 16}, "Llama, YaRN RoPE (attention factor)")
    llama("llama-longrope-v5", {"rope_type": "longrope", "rope_theta": 10000.0, "original_max_position_embeddings": 16,
                                "short_factor": [1.0, 1.5, 2.0, 3.0], "long_factor": [2.0, 3.0, 4.0, 6.0]},
          "Llama, LongRoPE (sequence beyond original_max_position_embeddings: long factors)")
    clip()
    t5("t5-gated-v5", "gated-gelu", False, "FLAN-T5-style (gated-gelu, own lm_head), transformers-5 save (scale_decoder_outputs false)")
    t5("t5-gated-v4", "gated-gelu", False, "FLAN-T5-style, transformers-4 config (tie_word_embeddings false)")
    t5("t5-tied-v5", "relu", True, "original T5 (relu, lm_head tied to shared, logits scaled by d_model^-0.5), transformers-5 save")
    t5("t5-tied-v4", "relu", True, "original T5, transformers-4 config (tie_word_embeddings true)")
    # the two layouts of one model are the same model for transformers too
    for a, b in (("llama-llama3-v4", "llama-llama3-v5"), ("clip-vision-v4", "clip-vision-v5"),
                 ("t5-gated-v4", "t5-gated-v5"), ("t5-tied-v4", "t5-tied-v5")):
        ha = load_file(os.path.join(OUT, a, "golden.safetensors"))["head"]
        hb = load_file(os.path.join(OUT, b, "golden.safetensors"))["head"]
        assert torch.equal(ha, hb), (a, b)
    print("golden fixtures in", OUT)
