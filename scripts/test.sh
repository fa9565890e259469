#!/usr/bin/env bash
# The project's test command (README): every crate's unit and integration tests.
# Tests that need the real MiniLM backbone run when PMQ_REAL_MODEL_DIR points at it
# (scripts/fetch_minilm.sh prints the path); they are skipped otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace "$@"
