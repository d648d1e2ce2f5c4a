#!/usr/bin/env bash
# On a machine with 2 GPUs: data parallelism over NCCL (mpirun -np 2, one GPU per rank) trains
# like one GPU. Prints the loss lines of the three runs side by side.
#   BUILD_DIR=build-gpu scripts/device-dist-check.sh   (after scripts/device-test.sh built megatron)
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bin=${BUILD_DIR:-build-gpu}/megatron
mpi=(mpirun --allow-run-as-root --oversubscribe -np 2)
common=(train --device cuda --mock-data --vocab-size 1000 --num-layers 2 --hidden-size 128 --num-attention-heads 4
        --seq-length 128 --micro-batch-size 4 --global-batch-size 16 --train-iters 20 --log-interval 1
        --eval-iters 0 --hidden-dropout 0 --attention-dropout 0 "$@")
"$bin" "${common[@]}" > one.log 2>&1 || { tail one.log; exit 1; }
"${mpi[@]}" "$bin" "${common[@]}" > dp2.log 2>&1 || { tail -30 dp2.log; exit 1; }
"${mpi[@]}" "$bin" "${common[@]}" --use-distributed-optimizer --ddp-bucket-size 20000 > dp2opt.log 2>&1 || { tail -30 dp2opt.log; exit 1; }
grep -E "parallel layout|weights" dp2opt.log
for f in one dp2 dp2opt; do grep -oE "lm loss: [0-9.E+-]+" $f.log | awk '{print $3}' > $f.loss; done
paste one.loss dp2.loss dp2opt.loss | awk '{d1 = ($2 - $1) / $1; d2 = ($3 - $1) / $1; if (d1 < 0) d1 = -d1; if (d2 < 0) d2 = -d2;
  if (d1 > m1) m1 = d1; if (d2 > m2) m2 = d2; print} END {printf "max rel diff: dp2 %.3g, dp2+distopt %.3g\n", m1, m2}'
