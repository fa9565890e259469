"""bench/scale/results.jsonl → results.json + results.md (one row per run), and the
extrapolation to a 7B/8B Llama from the measured per-linear costs."""

import json
import os

here = os.path.dirname(os.path.abspath(__file__))
rows = [json.loads(l) for l in open(os.path.join(here, "results.jsonl")) if l.strip()]
json.dump(rows, open(os.path.join(here, "results.json"), "w"), indent=1)
out = ["| model | K | samples/task | method | tokens | wall | forward+capture | Hessians | fold | solve | report figures | propagate | peak RSS | output | build |",
       "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
for r in rows:
    p = r["phases"]
    out.append(
        f"| {r['shape']} | {r['k']} | {r['samples_per_task']} | {r['method']} | {r['calibration_tokens']:,} "
        f"| {r['wall_seconds'] / 60:.1f} min | {p['forward_s']:.0f} s | {p['hessian_s']:.0f} s | {p['fold_s']:.0f} s "
        f"| {p['solve_s']:.0f} s | {p['metrics_s']:.0f} s | {p['propagate_s']:.0f} s "
        f"| {r['peak_rss_mib'] / 1024:.2f} GiB | {r['output_bytes'] / 2**20:.0f} MiB "
        f"| {r.get('build', '2026-12-02')} |")
open(os.path.join(here, "results.md"), "w").write("\n".join(out) + "\n")
print("\n".join(out))
