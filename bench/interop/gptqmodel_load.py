"""Loads one of pmq's GPTQ checkpoints with GPTQModel's own loader (`GPTQModel.load`, not
transformers' `from_pretrained`) on CPU and compares its outputs with pmq's fake-quant checkpoint of
the same run loaded in plain transformers (same dtype, same inputs as interop.py).

    python bench/interop/gptqmodel_load.py FAMILY GPTQ_DIR FAKE_DIR [DTYPE [BACKEND]]

FAMILY: llama (logits) or bert (mean-pooled last hidden states). DTYPE: bfloat16 (default),
float16 or float32 — float32 is only there to document GPTQModel 7.7's CPU float32 kernel
(TorchFusedLinear), which drops the zero points of asymmetric checkpoints. BACKEND: GPTQModel's
`backend=` (default auto; e.g. gptq_torch). Prints one JSON line on stdout (GPTQModel's logs go
to stderr): the kernel(s) GPTQModel picked, its version, cosine / max rel. diff / argmax agreement.
Set OMP_NUM_THREADS and GPTQMODEL_CPU_WORKERS to bound the CPU threads.
"""

import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from interop import inputs, output  # noqa: E402  same inputs and readout as the transformers check


def main(family, gptq_dir, fake_dir, dtype="bfloat16", backend="auto"):
    import gptqmodel
    from gptqmodel import GPTQModel
    from transformers import AutoModel, LlamaForCausalLM

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    dt = getattr(torch, dtype)
    x = inputs(family, fake_dir)
    res = {"family": family, "loader": "GPTQModel.load", "gptqmodel": gptqmodel.__version__,
           "dtype": dtype, "backend_requested": backend}
    try:
        q = GPTQModel.load(gptq_dir, device="cpu", dtype=dt, backend=backend)
    except Exception as e:  # record the client's error instead of a traceback
        res["error"] = f"{type(e).__name__}: {str(e).splitlines()[0]}"  # no module dump
        print(json.dumps(res), file=RESULT, flush=True)
        return
    hf = q.model.eval()  # GPTQModel wraps the transformers model
    quant = [m for m in hf.modules() if hasattr(m, "qweight")]
    res["qmodel_class"] = type(q).__name__
    res["quantized_linears_loaded"] = len(quant)
    res["kernels"] = sorted({type(m).__name__ for m in quant})
    a = output(family, hf, x)
    cls = LlamaForCausalLM if family == "llama" else AutoModel
    b = output(family, cls.from_pretrained(fake_dir, dtype=dt).eval(), x)
    cos = torch.nn.functional.cosine_similarity(a.flatten(1), b.flatten(1), dim=1)
    res["min_cosine"] = cos.min().item()
    res["max_abs_diff_rel"] = ((a - b).abs().max() / b.abs().max()).item()
    if family == "llama":
        res["argmax_agreement"] = (a.argmax(-1) == b.argmax(-1)).float().mean().item()
    print(json.dumps(res), file=RESULT, flush=True)


if __name__ == "__main__":
    if len(sys.argv) not in (4, 5, 6) or sys.argv[1] not in ("llama", "bert"):
        sys.exit(__doc__)
    # GPTQModel logs to stdout: point fd 1 at stderr and keep only the JSON line on stdout
    sys.stdout.flush()
    RESULT = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    main(*sys.argv[1:])
