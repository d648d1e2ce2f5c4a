#!/usr/bin/env bash
# Configures and builds megatron.cpp into build/ (Release; the CUDA backend is compiled when
# nvcc is found). Extra arguments go to cmake's configure step.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v nvcc >/dev/null || { [ -x /usr/local/cuda/bin/nvcc ] && export PATH=/usr/local/cuda/bin:$PATH; } || true
BUILD=${BUILD_DIR:-build}
if [ ! -f "$BUILD/build.ninja" ]; then
  cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release "$@" >/dev/null
fi
cmake --build "$BUILD" -j"$(nproc)"
