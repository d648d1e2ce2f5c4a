#!/usr/bin/env bash
# The embedded default: installs, builds, and trains a small GPT on the bundled corpus on CPU,
# printing Megatron's log lines. Extra arguments go to `megatron train`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh
exec ./build/megatron train "$@"
