#!/usr/bin/env bash
# On a machine with 2 GPUs: a checkpoint saved by a tensor-parallel run resumes under another
# layout (issue 7's "checkpoint under TP=2 x DP=4, resume as TP=4", on the GPUs we have). GPT
# 350M, bf16, mock data: TP=2 + SP trains 20 iterations saving at 10; from that checkpoint
# DP=2 with the distributed optimizer (and, to compare, TP=2 + SP again) continues to 20. Prints
# both continuations' losses and their largest relative difference (bf16: the layouts round
# differently; 3.0e-5 measured on H200s), and fails above TOL (default 1e-3).
#   BUILD_DIR=build-gpu scripts/device-reshard-check.sh
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bin=${BUILD_DIR:-build-gpu}/megatron
dir=$(mktemp -d "${TMPDIR:-/tmp}/mt_reshard.XXXX")
trap 'rm -rf "$dir"' EXIT
mpi=(mpirun --allow-run-as-root --oversubscribe --bind-to none -np 2 -x NCCL_NVLS_ENABLE=0)
common=(train --device cuda --bf16 --mock-data --vocab-size 50257 --num-layers 24 --hidden-size 1024
        --num-attention-heads 16 --seq-length 1024 --micro-batch-size 8 --global-batch-size 16 --train-iters 20
        --log-interval 1 --eval-iters 0 --hidden-dropout 0 --attention-dropout 0 --lr 3e-4 --save-interval 10)
tp2=(--tensor-model-parallel-size 2 --sequence-parallel)
dp2=(--use-distributed-optimizer)
"${mpi[@]}" "$bin" "${common[@]}" "${tp2[@]}" --save "$dir/ckpt" --exit-interval 10 > "$dir/save.log" 2>&1 \
  || { tail -30 "$dir/save.log"; exit 1; }
grep -E "saved checkpoint" "$dir/save.log"
cp -r "$dir/ckpt" "$dir/ckpt_dp"
"${mpi[@]}" "$bin" "${common[@]}" "${tp2[@]}" --load "$dir/ckpt" --save "$dir/ckpt" > "$dir/tp2.log" 2>&1 \
  || { tail -30 "$dir/tp2.log"; exit 1; }
"${mpi[@]}" "$bin" "${common[@]}" "${dp2[@]}" --load "$dir/ckpt_dp" --save "$dir/ckpt_dp" > "$dir/dp2.log" 2>&1 \
  || { tail -30 "$dir/dp2.log"; exit 1; }
grep -E "loaded|layout" "$dir/dp2.log" | head -3
paste <(grep -oE "iteration +[0-9]+/.*lm loss: [0-9.E+-]+" "$dir/tp2.log" | awk '{print $2, $NF}') \
      <(grep -oE "lm loss: [0-9.E+-]+" "$dir/dp2.log" | awk '{print $3}') \
  | awk -v tol="${TOL:-1e-3}" '{ d = ($3 - $2) / $2; if (d < 0) d = -d; if (d > m) m = d
      printf "iteration %s: TP=2+SP %s   DP=2 (resharded) %s\n", $1, $2, $3 }
      END { printf "max rel diff: %.3g\n", m; if (NR < 10 || m > tol) { print "FAIL"; exit 1 } print "ok" }'
