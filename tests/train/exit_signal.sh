#!/usr/bin/env bash
# --exit-signal-handler: SIGTERM mid-run saves a checkpoint at the end of the iteration and exits 0;
# --load then continues from it. Usage: exit_signal.sh MEGATRON_BINARY
set -u
bin=$1
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
common=(train --device cpu --mock-data --vocab-size 300 --num-layers 2 --hidden-size 32 --num-attention-heads 4
        --seq-length 16 --micro-batch-size 2 --global-batch-size 4 --eval-iters 0 --log-interval 1)
"$bin" "${common[@]}" --train-iters 100000 --save "$dir/ck" --exit-signal-handler > "$dir/log" 2>&1 &
pid=$!
for _ in $(seq 1 300); do grep -q "iteration  *3/" "$dir/log" && break; sleep 0.1; done
kill -TERM $pid
wait $pid
rc=$?
it=$(cat "$dir/ck/latest_checkpointed_iteration.txt" 2>/dev/null)
if [[ $rc -ne 0 || -z "$it" ]] || ! grep -q "exiting at iteration $it (SIGTERM" "$dir/log"; then
  echo "FAIL: rc $rc, tracker '$it'"; tail -5 "$dir/log"; exit 1
fi
"$bin" "${common[@]}" --train-iters $((it + 2)) --load "$dir/ck" > "$dir/log2" 2>&1 || { echo "FAIL: resume"; cat "$dir/log2"; exit 1; }
grep -q "iteration  *$((it + 1))/" "$dir/log2" || { echo "FAIL: resume did not continue at $((it + 1))"; cat "$dir/log2"; exit 1; }
echo "ok: SIGTERM saved iteration $it, resumed at $((it + 1))"
