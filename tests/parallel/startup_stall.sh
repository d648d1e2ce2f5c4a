#!/usr/bin/env bash
# A rank stopped (SIGSTOP) during start-up, before its first collective: the job ends by itself
# within --distributed-timeout-minutes (0.1 = 6 s) plus slack, non-zero, naming that rank.
#   startup_stall.sh MEGATRON MPIRUN...
set -u
megatron=$1
shift
out=$(mktemp)
trap 'rm -f "$out"' EXIT
t0=$(date +%s)
timeout 60 "$@" -x MEGATRON_TEST_STALL_RANK=1 -np 2 "$megatron" train --mock-data --vocab-size 300 --num-layers 2 \
  --hidden-size 32 --num-attention-heads 4 --seq-length 32 --micro-batch-size 2 --global-batch-size 4 --train-iters 5 \
  --eval-iters 0 --device cpu --distributed-timeout-minutes 0.1 >"$out" 2>&1
rc=$?
t1=$(date +%s)
grep "did not arrive" "$out"
echo "--- job exited with $rc after $((t1 - t0)) s"
[ $rc -ne 0 ] && [ $rc -ne 124 ] || { echo "FAIL: exit code $rc (124: still running after 60 s)"; tail -n 20 "$out"; exit 1; }
[ $((t1 - t0)) -le 30 ] || { echo "FAIL: took longer than the 6 s timeout plus slack"; exit 1; }
grep -q "rank(s) 1 did not arrive at start-up" "$out" || { echo "FAIL: rank 1 not named"; tail -n 20 "$out"; exit 1; }
echo ok
