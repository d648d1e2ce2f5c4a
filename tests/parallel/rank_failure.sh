#!/usr/bin/env bash
# A rank that dies (kill) or hangs (stop) mid-run must take the whole job down within
# --distributed-timeout-minutes, non-zero, with a message naming a rank.
#   rank_failure.sh MODE MEGATRON MPIRUN...    MODE: kill (SIGKILL rank 1) or stop (SIGSTOP rank 1)
#   DEVICE=cuda rank_failure.sh ...            on GPUs (NCCL; the watchdog must notice), default cpu
#   EXTRA_ARGS="--pipeline-model-parallel-size 2" rank_failure.sh ...   a pipeline: rank 0 waits in a
#                                              point-to-point transfer from the stage that died
set -u
mode=$1 megatron=$2
shift 2
out=$(mktemp)
trap 'rm -f "$out"' EXIT
# 0.1 minutes = 6 s: a waiting collective gives up after that.
"$@" -np 2 "$megatron" train --mock-data --vocab-size 300 --num-layers 2 --hidden-size 32 --num-attention-heads 4 \
  --seq-length 32 --micro-batch-size 2 --global-batch-size 4 --train-iters 1000000 --log-interval 1 \
  --eval-interval 1000000 --eval-iters 0 --device "${DEVICE:-cpu}" --distributed-timeout-minutes 0.1 ${EXTRA_ARGS:-} >"$out" 2>&1 &
launcher=$!
# Wait for training to be under way (an iteration line), at most 60 s.
for _ in $(seq 600); do
  grep -q "iteration .* 3/" "$out" && break
  kill -0 $launcher 2>/dev/null || { echo "job ended before training started:"; cat "$out"; exit 1; }
  sleep 0.1
done
# Rank 1 is the launcher's child whose environment says so.
victim=""
for p in $(pgrep -P $launcher); do
  if tr '\0' '\n' </proc/$p/environ 2>/dev/null | grep -qx "OMPI_COMM_WORLD_RANK=1"; then victim=$p; fi
done
[ -n "$victim" ] || { echo "rank 1 not found among the children of $launcher"; kill $launcher; exit 1; }
t0=$(date +%s)
if [ "$mode" = kill ]; then kill -KILL "$victim"; else kill -STOP "$victim"; fi
# The job must end by itself within the timeout plus slack.
for _ in $(seq 600); do
  kill -0 $launcher 2>/dev/null || break
  sleep 0.1
done
if kill -0 $launcher 2>/dev/null; then
  echo "FAIL: job still running 60 s after rank 1 was sent SIG${mode^^}"
  kill -CONT "$victim" 2>/dev/null
  kill $launcher
  exit 1
fi
wait $launcher
rc=$?
t1=$(date +%s)
echo "--- job output (tail) ---"
tail -n 15 "$out"
echo "--- mode $mode: job exited with $rc, $((t1 - t0)) s after the signal"
[ $rc -ne 0 ] || { echo "FAIL: exit code 0"; exit 1; }
grep -qiE "rank 1|rank 0: .*did not complete" "$out" || { echo "FAIL: no message naming a rank"; exit 1; }
echo "ok"
