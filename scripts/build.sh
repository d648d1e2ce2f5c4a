#!/usr/bin/env bash
# Configures and builds megatron.cpp into build/ (Release; the CUDA backend is compiled when
# nvcc is found). Extra arguments go to cmake's configure step. MT_BUILD_TARGETS="megatron" builds
# only those targets (scripts/run-default.sh: the trainer alone, not the tests and fuzzers).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v nvcc >/dev/null || { [ -x /usr/local/cuda/bin/nvcc ] && export PATH=/usr/local/cuda/bin:$PATH; } || true
BUILD=${BUILD_DIR:-build}
if [ ! -f "$BUILD/build.ninja" ]; then
  cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release "$@" >/dev/null
fi
targets=()
for t in ${MT_BUILD_TARGETS:-}; do targets+=(--target "$t"); done
cmake --build "$BUILD" -j"$(nproc)" "${targets[@]}"
