"""Summarises bench/solve/run.sh: best-of-repeats solve times (each tool repeats in one
process), the first (cold) run's time, pmq/GPTQModel and E-PMQ/GPTQ ratios, and agreement with
GPTQModel, into results.json and results.md."""
import json
import os
import sys

results, out_dir = sys.argv[1:3]
rows = [json.loads(l) for l in open(results) if l.strip()]
best = {}
for r in rows:
    if r.get("tool") == "pmq":
        key = ("pmq", r["method"], r["cols"], r["tasks"])
    else:
        key = ("gptqmodel", "gptq", r["cols"], 8)
    if key not in best or r["time_solve_s"] < best[key]["time_solve_s"]:
        best[key] = r
summary = []
lines = ["| d | solver | K | solve s (best) | first run s | vs GPTQModel | vs pmq GPTQ | notes |",
         "|---|---|---|---|---|---|---|---|"]
for d in sorted({k[2] for k in best}):
    peer = best.get(("gptqmodel", "gptq", d, 8))
    gq = best.get(("pmq", "gptq", d, 8))
    for key in sorted((k for k in best if k[2] == d), key=lambda k: (k[0] != "gptqmodel", k[1], k[3])):
        r = best[key]
        t = r["time_solve_s"]
        runs = r.get("time_solve_runs_s") or r.get("times_s") or [t]
        vs_peer = t / peer["time_solve_s"] if peer else None
        vs_gptq = t / gq["time_solve_s"] if gq and key[0] == "pmq" else None
        note = ""
        if key[0] == "gptqmodel":
            note = (f"identical weights {100 * r['identical_weights_fraction']:.2f} %, objective "
                    f"pmq/GPTQModel {r['objective_pmq'] / r['objective_peer']:.5f}")
        elif key[1] == "epmq":
            note = f"fold R = ΣW_iH_i {r['time_fold_s']:.2f} s"
        summary.append({"d": d, "tool": key[0], "method": key[1], "k": key[3], "solve_s": t,
                        "first_run_s": runs[0], "vs_gptqmodel": vs_peer, "vs_pmq_gptq": vs_gptq, "row": r})
        f = lambda x: "–" if x is None else f"{x:.2f}×"
        lines.append(f"| {d} | {key[0]} {key[1]} | {key[3] if key[1] == 'epmq' else '–'} | {t:.3f} | {runs[0]:.3f} | {f(vs_peer)} | {f(vs_gptq)} | {note} |")
json.dump(summary, open(os.path.join(out_dir, "results.json"), "w"), indent=1)
open(os.path.join(out_dir, "results.md"), "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
