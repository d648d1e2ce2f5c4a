#!/usr/bin/env bash
# The embedded default: installs, builds, and trains a small GPT on the bundled corpus on CPU,
# printing Megatron's log lines. Extra arguments go to `megatron train`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
MT_BUILD_TARGETS=megatron bash scripts/build.sh  # the trainer only: the tests build with scripts/test.sh
exec ./build/megatron train "$@"
