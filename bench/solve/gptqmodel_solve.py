"""Times GPTQModel's GPTQ (gptqmodel.quantization.gptq.GPTQ, torch on CPU) on a pmq layer file
and compares its result with pmq's.

The layer file holds `merged` [out, in] and `hessian.<i>` [in, in] (Σ_tokens x xᵀ of task i).
GPTQModel accumulates H from inputs, so it is fed tokens X with X Xᵀ = Σ_i H_i (rows of the
Cholesky factor); its 2/N scale does not change the result. Only `quantize()` is timed.

usage: gptqmodel_solve.py LAYER PMQ_OUT.safetensors --bits 4 --group-size 128 [--sym] [--repeats 3]
Prints one JSON line.
"""
import argparse
import json
import os
import time

import torch
from safetensors.torch import load_file


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("layer")
    ap.add_argument("pmq_out")
    ap.add_argument("--bits", type=int, default=4)
    ap.add_argument("--group-size", type=int, default=128)
    ap.add_argument("--sym", action="store_true")
    ap.add_argument("--damp", type=float, default=0.01)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    from gptqmodel.quantization.config import QuantizeConfig
    from gptqmodel.quantization.gptq import GPTQ

    t = load_file(args.layer)
    w = t["merged"].to(torch.float32)
    rows, cols = w.shape
    h = sum(v.to(torch.float64) for k, v in t.items() if k.startswith("hessian."))
    # tokens with X Xᵀ = H (in f64, then f32 as GPTQModel accumulates)
    jitter = 1e-9 * torch.diagonal(h).mean()
    l = torch.linalg.cholesky(h + jitter * torch.eye(cols, dtype=torch.float64))
    tokens = l.T.contiguous().to(torch.float32)  # row t = column t of L: Σ_t x_t x_tᵀ = L Lᵀ

    times, q = [], None
    for _ in range(args.repeats):
        lin = torch.nn.Linear(cols, rows, bias=False)
        lin.weight.data = w.clone()
        qcfg = QuantizeConfig(
            bits=args.bits,
            group_size=args.group_size,
            sym=args.sym,
            desc_act=False,
            damp_percent=args.damp,
            act_group_aware=False,
        )
        g = GPTQ(lin, qcfg)
        g.quantizer.configure(perchannel=True)  # as GPTQModel's own GPTQ processor does
        g.add_batch(tokens.unsqueeze(0), None)
        t0 = time.perf_counter()
        res = g.quantize(blocksize=128)
        times.append(time.perf_counter() - t0)
        q = res[0].to(torch.float64)

    pmq = load_file(args.pmq_out)["weight"].to(torch.float64)
    w64 = w.to(torch.float64)

    def objective(qm):
        d = qm - w64
        return float(torch.sum((d @ h) * d))

    same = float((torch.isclose(q, pmq, rtol=1e-6, atol=1e-7)).double().mean())
    print(json.dumps({
        "peer": "gptqmodel",
        "torch_threads": torch.get_num_threads(),
        "rows": rows, "cols": cols,
        "time_solve_s": min(times), "times_s": times,
        "objective_peer": objective(q), "objective_pmq": objective(pmq),
        "identical_weights_fraction": same,
        "max_abs_diff": float((q - pmq).abs().max()),
    }))


if __name__ == "__main__":
    main()
