#!/usr/bin/env bash
# SIGTERM / SIGINT sent to mpirun with --exit-signal-handler, the ranks logging every iteration:
# every rank saves and exits 0, and the checkpoint resumes bit-identically (the resumed run's log
# lines and final checkpoint shards equal a run from scratch to the same iteration).
#   mpirun_signal.sh TRIES MEGATRON MPIRUN...
# Tries alternate SIGTERM and SIGINT; one more try sends SIGUSR1, which mpirun relays without
# ending the job itself: then mpirun must exit 0 too. Open MPI's mpirun exits 1 after SIGTERM or
# SIGINT whatever the ranks do (orterun's abort path), so only the ranks' exit codes are checked
# there; it SIGKILLs the ranks odls_base_sigkill_timeout seconds after its SIGTERM (default 1),
# which the launch raises as the README says to.
set -u
tries=$1 megatron=$2
shift 2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# Each rank's exit code is recorded by a shell in a session of its own: when the first rank leaves,
# mpirun SIGKILLs the process groups of the others, which would take a recorder there with it.
# The outer wrapper (in mpirun's group) relays the signals to that session.
cat >"$work/wrap.sh" <<'WRAP'
#!/usr/bin/env bash
setsid bash -c 'trap "" TERM INT USR1; "$@"; echo "rank ${OMPI_COMM_WORLD_RANK:-?} exit $?" >>"$STATUS_FILE"' rank "$@" &
inner=$!
for s in TERM INT USR1; do trap "kill -$s -- -$inner 2>/dev/null" $s; done
while kill -0 $inner 2>/dev/null; do wait $inner; done
WRAP
chmod +x "$work/wrap.sh"
model=(--mock-data --vocab-size 300 --num-layers 2 --hidden-size 32 --num-attention-heads 4 --seq-length 32
       --micro-batch-size 2 --global-batch-size 4 --log-interval 1 --eval-interval 1000000 --eval-iters 0
       --device cpu --lr-decay-iters 100000)
fields() { grep -o "iteration *[0-9]*/.*" "$1" | sed -E 's/ \| elapsed time[^|]*\|[^|]*\|[^|]*\|/ |/'; }
fail=0
for t in $(seq 0 "$tries"); do
  if [ "$t" -eq "$tries" ]; then sig=USR1; else sig=$([ $((t % 2)) -eq 0 ] && echo TERM || echo INT); fi
  out="$work/out$t" save="$work/save$t"
  export STATUS_FILE="$work/status$t"
  "$@" ${SIGKILL_TIMEOUT:+--mca odls_base_sigkill_timeout $SIGKILL_TIMEOUT} -np 2 "$work/wrap.sh" "$megatron" train "${model[@]}" \
    --train-iters 100000 --save "$save" --exit-signal-handler >"$out" 2>&1 &
  launcher=$!
  # Signal at a different point of the run each time: after iteration 2 + t.
  for _ in $(seq 600); do
    grep -qE "iteration +$((2 + t))/" "$out" 2>/dev/null && break
    kill -0 $launcher 2>/dev/null || break
    sleep 0.05
  done
  kill -$sig $launcher
  for _ in $(seq 600); do kill -0 $launcher 2>/dev/null || break; sleep 0.1; done
  if kill -0 $launcher 2>/dev/null; then
    echo "try $t (SIG$sig): FAIL: mpirun still running 60 s after the signal"; kill -KILL $launcher; fail=1; continue
  fi
  wait $launcher; mpirun_rc=$?
  for _ in $(seq 50); do [ "$(grep -c exit "$STATUS_FILE" 2>/dev/null)" = 2 ] && break; sleep 0.1; done
  k=$(cat "$save/latest_checkpointed_iteration.txt" 2>/dev/null || echo none)
  ranks_ok=$(grep -c "exit 0" "$STATUS_FILE" 2>/dev/null)
  # Known race (about 1 try in 10 under load): a rank leaving without MPI_Finalize after the save's
  # barrier makes Open MPI end a slower peer with 195 (PMIx: lost connection) before its own _exit(0).
  # The checkpoint is complete by then. STRICT_EXIT=0 counts such a rank as leaving cleanly.
  if [ "${STRICT_EXIT:-1}" = 0 ] && [ $sig != USR1 ]; then
    ranks_ok=$(grep -cE "exit (0|195)$" "$STATUS_FILE" 2>/dev/null)
    grep -q "exit 195" "$STATUS_FILE" 2>/dev/null && echo "try $t: note: a rank ended with 195 after the save (lost PMIx connection)"
  fi
  msg="try $t (SIG$sig): checkpoint at iteration $k, ranks exiting 0: ${ranks_ok:-0}/2, mpirun exit $mpirun_rc"
  if [ "$k" = none ] || [ "${ranks_ok:-0}" != 2 ] || { [ $sig = USR1 ] && [ $mpirun_rc -ne 0 ]; }; then
    echo "$msg: FAIL"; cat "$STATUS_FILE" 2>/dev/null; tail -n 5 "$out" | cut -c1-200; fail=1; continue
  fi
  # Resume to k + 3 and compare with a run from scratch to k + 3: log lines and shard bytes.
  n=$((k + 3))
  "$@" -np 2 "$megatron" train "${model[@]}" --train-iters $n --load "$save" --save "$work/resumed$t" >"$out.resumed" 2>&1 &&
  "$@" -np 2 "$megatron" train "${model[@]}" --train-iters $n --save "$work/fresh$t" >"$out.fresh" 2>&1 ||
    { echo "$msg: FAIL: a resumed or fresh run failed"; tail -n 5 "$out.resumed" "$out.fresh"; fail=1; continue; }
  fields "$out.fresh" | tail -n 3 >"$work/a" && fields "$out.resumed" >"$work/b"
  same_shards=1
  for f in "$work/fresh$t/iter_$(printf %07d $n)"/shard_*; do
    cmp -s "$f" "$work/resumed$t/iter_$(printf %07d $n)/$(basename "$f")" || same_shards=0
  done
  if [ "$(wc -l <"$work/b")" -ne 3 ] || ! cmp -s "$work/a" "$work/b" || [ $same_shards -ne 1 ]; then
    echo "$msg: FAIL: the resumed run differs from a run from scratch"; diff "$work/a" "$work/b"; fail=1; continue
  fi
  echo "$msg; resumed to $n bit-identically: ok"
  rm -rf "$save" "$work/resumed$t" "$work/fresh$t"
done
[ $fail -eq 0 ] && echo "ok: $tries of $tries SIGTERM/SIGINT tries and one SIGUSR1 try saved and resumed bit-identically"
exit $fail
