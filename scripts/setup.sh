#!/usr/bin/env bash
# Installs what megatron.cpp needs on a Debian/Ubuntu machine: the C++ toolchain and libraries
# from apt, and (with --python) a virtual environment .venv holding the test-only Python
# packages (numpy, torch, transformers, safetensors, pytest, tokenizers,
# sentencepiece, tensorboard; megatron-core and psutil, its checkpoint writer's, for the Megatron-LM
# checkpoint tests). Safe to run again: it installs only
# what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

PKGS=(build-essential cmake ninja-build ccache pkg-config git
      libopenblas-openmp-dev nlohmann-json3-dev libcli11-dev libfmt-dev libgtest-dev
      openmpi-bin libopenmpi-dev python3-venv
      libpcre2-dev libsentencepiece-dev zlib1g-dev
      libcpp-httplib-dev  # the HTTP server of `megatron serve`
      clang libclang-rt-dev)  # clang + libFuzzer runtime: the fuzz tests of tests/fuzz
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ "${1:-}" = "--python" ]; then
  PY=${PYTHON:-python3}
  if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv"
    "$PY" -m venv .venv
  fi
  if ! .venv/bin/python -c "import numpy, torch, transformers, safetensors, pytest, tokenizers, sentencepiece, tensorboard, psutil, megatron.core" 2>/dev/null; then
    echo "setup: installing Python test packages into .venv (torch is large; this takes a minute)"
    .venv/bin/pip install -q --disable-pip-version-check numpy torch transformers safetensors pytest tokenizers sentencepiece tensorboard \
      nvidia-cudnn-frontend megatron-core psutil
  fi
fi
