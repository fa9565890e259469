#!/usr/bin/env bash
# Makes (or repairs) a Python venv with torch and more packages for the scripts that run the
# Python clients (bench/peers, bench/interop, scripts/golden.sh):
#
#   scripts/torch_venv.sh VENV "MODULES" PACKAGE...
#
# Nothing happens when VENV's python already imports MODULES (e.g. "torch, gptqmodel").
# torch comes from its CPU wheel index; where only PyPI is reachable, from PyPI (that build
# pulls the CUDA libraries, ~3 GB, and runs on the CPU without a GPU).
set -euo pipefail
venv=$1 modules=$2
shift 2
if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c "import $modules" >/dev/null 2>&1; then
  exit 0
fi
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --index-url https://download.pytorch.org/whl/cpu torch \
  || "$venv/bin/pip" install --quiet torch
"$venv/bin/pip" install --quiet "$@"
