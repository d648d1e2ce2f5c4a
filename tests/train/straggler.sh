#!/usr/bin/env bash
# --log-straggler under mpirun: rank R made slow (MEGATRON_TEST_SLOW_RANK=R:MS, a sleep per
# iteration) is named as slower than the median, and as the slowest. Usage: straggler.sh MEGATRON R LAUNCHER...
set -u
bin=$1; slow=$2; shift 2
dir=$(mktemp -d); trap 'rm -rf "$dir"' EXIT
MEGATRON_TEST_SLOW_RANK=$slow:40 "$@" "$bin" train --device cpu --mock-data --vocab-size 300 --num-layers 1 \
  --hidden-size 32 --num-attention-heads 4 --seq-length 16 --micro-batch-size 1 --global-batch-size 4 --eval-iters 0 \
  --log-interval 2 --train-iters 4 --log-straggler --straggler-minmax-count 2 > "$dir/out" 2> "$dir/err" \
  || { echo "FAIL: exit $?"; cat "$dir/out" "$dir/err"; exit 1; }
lines=$(grep -c "straggler (compute ms per iteration" "$dir/out")
[ "$lines" = 2 ] || { echo "FAIL: $lines straggler lines, expected 2"; cat "$dir/out"; exit 1; }
grep "straggler (compute" "$dir/out" | grep -v "slowest: $slow (.*slower than 1.10 x median (and 5 ms): rank(s) $slow\$" \
  && { echo "FAIL: rank $slow not named alone as the straggler"; exit 1; }
grep "straggler (compute" "$dir/out" | head -1
echo PASS
