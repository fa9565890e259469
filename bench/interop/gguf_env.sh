#!/usr/bin/env bash
# The GGUF clients, built once and cached under ${PMQ_GGUF_CACHE:-~/.cache/pmq/gguf}:
# - a venv (PMQ_PEER_VENV, shared with bench/peers and bench/interop/run.sh) with gguf-py
#   (llama.cpp's own GGUF reader), numpy, safetensors, transformers and torch (CPU),
#   sentencepiece and protobuf — what llama.cpp's convert_hf_to_gguf.py needs;
# - llama.cpp itself, from the sources the llama-cpp-python sdist on PyPI vendors (CPU only,
#   Release; cmake from Debian): llama-embedding, llama-perplexity, llama-tokenize, llama-simple.
# Prints VENV_PY=, CONVERTER=, LLAMA_BIN= lines (eval them). Everything else goes to stderr.
set -euo pipefail
cache="${PMQ_GGUF_CACHE:-$HOME/.cache/pmq/gguf}"
mkdir -p "$cache"
if ! command -v cmake >/dev/null; then
  (apt-get update && apt-get install -y cmake) >&2
fi
venv="${PMQ_PEER_VENV:-$HOME/.cache/pmq/venv-peer}"
"$(dirname "$0")/../../scripts/torch_venv.sh" "$venv" "torch, gguf, transformers, sentencepiece" \
  gguf numpy safetensors "transformers>=5" sentencepiece protobuf >&2
src="$cache/src"
if [ ! -d "$src/vendor/llama.cpp" ]; then
  rm -rf "$cache/sdist" && mkdir -p "$cache/sdist"
  "$venv/bin/pip" download -q --no-binary :all: --no-deps llama-cpp-python -d "$cache/sdist" >&2
  rm -rf "$src" && mkdir -p "$src"
  tar -xzf "$cache"/sdist/llama_cpp_python-*.tar.gz -C "$src" --strip-components=1
fi
llama="$src/vendor/llama.cpp"
build="$cache/build"
bins=(llama-embedding llama-perplexity llama-tokenize llama-simple)
missing=0
for b in "${bins[@]}"; do [ -x "$build/bin/$b" ] || missing=1; done
if [ "$missing" = 1 ]; then
  cmake -S "$llama" -B "$build" -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DGGML_NATIVE=ON \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF -DBUILD_SHARED_LIBS=OFF >&2
  cmake --build "$build" --config Release -j "${PMQ_GGUF_JOBS:-2}" --target "${bins[@]}" >&2
fi
echo "VENV_PY=$venv/bin/python"
echo "CONVERTER=$llama/convert_hf_to_gguf.py"
echo "LLAMA_BIN=$build/bin"
