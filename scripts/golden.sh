#!/usr/bin/env bash
# Regenerates the golden fixtures of pmq-models' HF-parity tests (crates/pmq-models/tests/golden)
# with transformers itself, in a venv of its own (torch CPU, transformers 5, Pillow from PyPI).
# Not run by CI: the fixtures are committed. Usage: scripts/golden.sh [VENV_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${1:-${PMQ_GOLDEN_VENV:-$HOME/.cache/pmq/venv-golden}}"
scripts/torch_venv.sh "$VENV" "torch, transformers, safetensors, PIL, numpy" \
  "transformers>=5,<6" safetensors pillow numpy
"$VENV/bin/python" scripts/golden/make_golden.py crates/pmq-models/tests/golden
du -sh crates/pmq-models/tests/golden
