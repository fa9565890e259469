#!/usr/bin/env bash
# Regenerates the golden fixtures of pmq-models' HF-parity tests (crates/pmq-models/tests/golden)
# with transformers itself, in a venv of its own (torch CPU, transformers 5, Pillow from PyPI).
# Not run by CI: the fixtures are committed. Usage: scripts/golden.sh [VENV_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${1:-${PMQ_GOLDEN_VENV:-$HOME/.cache/pmq/venv-golden}}"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
  # torch's CPU wheels, else PyPI's torch (CUDA libraries included; runs on the CPU)
  "$VENV/bin/pip" install --quiet --index-url https://download.pytorch.org/whl/cpu torch \
    || "$VENV/bin/pip" install --quiet torch
  "$VENV/bin/pip" install --quiet "transformers>=5,<6" safetensors pillow numpy
fi
"$VENV/bin/python" scripts/golden/make_golden.py crates/pmq-models/tests/golden
du -sh crates/pmq-models/tests/golden
